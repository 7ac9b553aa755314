"""Signed requests at the tracker: forged, replayed, stale and unsigned requests are refused
(401), a node speaking for another is refused (403), and none of them changes anything.

"Nothing changed" is checked on everything the tracker keeps: every row of every table
(after writing the announces kept in memory) and the API's answers about nodes, files,
drains and stats.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from p2pshare.core.manifest import Manifest
from p2pshare.core.messages import AnnounceAck, AuditTask, RepairTask
from p2pshare.security.signing import (
    HEADER,
    SignedHeader,
    body_sha256,
    canonical,
    sign_request,
)
from p2pshare.tracker.liveness import flush_once
from p2pshare.tracker.models import Base
from tests.integration.tracker.conftest import Running
from tests.integration.tracker.support import (
    announce,
    assert_problem,
    body,
    keys,
    manifest,
    nid,
    node,
    registration,
    send_signed,
    signed,
)

JSON = {"content-type": "application/json"}


async def snapshot(t: Running, m: Manifest | None = None) -> dict[str, Any]:
    """Return everything the tracker keeps, as plain values: each table's rows (announces
    kept in memory written first) and the API's view of nodes, files, drains and stats."""
    await flush_once(t.state.liveness, t.state.repo)
    tables: dict[str, Any] = {}
    async with t.state.db.read() as s:
        for table in Base.metadata.sorted_tables:
            rows = (await s.execute(select(table))).all()
            tables[table.name] = sorted((tuple(r) for r in rows), key=repr)
    api = {
        "nodes": (await t.client.get("/v1/nodes")).json(),
        "online": (await t.client.get("/v1/nodes?online=true")).json(),
        "files": (await t.client.get("/v1/files?include_deleted=true")).json(),
        "stats": (await t.client.get("/v1/stats")).json(),
        "drain": {
            n: (await t.client.get(f"/v1/nodes/{nid(n)}/drain")).json()
            for n in ("owner", "h1", "h2")
        },
    }
    if m is not None:
        api["detail"] = (await t.client.get(f"/v1/files/{m.file_id}")).json()
    return {"tables": tables, "api": api}


async def registered(t: Running, *, target: int = 1) -> Manifest:
    """Announce owner, h1 and h2 (signed); register a file of owner held by owner and h1."""
    await announce(t.client, node("owner"), node("h1"), node("h2"))
    m = manifest(2)
    reg = registration(m, "owner", ["owner", "h1"], replica_target=target)
    r = await t.client.post("/v1/files", json=body(reg))
    assert r.status_code == 201, r.text
    return m


# --- forged signatures ---------------------------------------------------------------------


async def test_announce_signed_by_another_node_is_forbidden(tracker: Running) -> None:
    m = await registered(tracker)
    before = await snapshot(tracker, m)
    forged = node("h1", free=1).model_copy(update={"address": "http://127.0.0.1:9"})
    content = json.dumps(body(forged)).encode()
    # a valid signature, but by h2, over a body speaking for h1
    r = await tracker.client.post(
        "/v1/nodes/announce",
        content=content,
        headers={**JSON, **signed("POST", "/v1/nodes/announce", content, "h2")},
    )
    assert_problem(r, 403, "forbidden", nid("h1"), nid("h2"))
    assert await snapshot(tracker, m) == before
    listed = {n["node_id"]: n for n in before["api"]["nodes"]["items"]}
    assert listed[nid("h1")]["address"] == node("h1").address


def forged_header(
    *, claimed: str, key_of: str, signed_by: str, method: str, target: str, content: bytes
) -> dict[str, str]:
    """Return a signature header claiming node ``claimed`` with ``key_of``'s public key and a
    signature made with ``signed_by``'s private key."""
    time_ms = int(time.time() * 1000)
    nonce = secrets.token_hex(16)
    claimed_id = nid(claimed)
    message = canonical(method, target, time_ms, nonce, body_sha256(content), claimed_id)
    header = SignedHeader(
        node_id=claimed_id,
        public_key=keys(key_of).public_key,
        time_ms=time_ms,
        nonce=nonce,
        signature=keys(signed_by).sign(message),
    )
    return {HEADER: header.render()}


@pytest.mark.parametrize(
    ("key_of", "signed_by", "needle"),
    [
        ("h2", "h2", "is not node"),  # h2's own key and signature, claimed to be h1's
        ("h1", "h2", "does not match"),  # h1's key, but signed with h2's private key
    ],
    ids=["key-not-the-node's", "signature-by-another-key"],
)
async def test_announce_with_a_key_that_is_not_the_node_s_is_unauthenticated(
    tracker: Running, key_of: str, signed_by: str, needle: str
) -> None:
    m = await registered(tracker)
    before = await snapshot(tracker, m)
    content = json.dumps(body(node("h1", free=1))).encode()
    header = forged_header(
        claimed="h1",
        key_of=key_of,
        signed_by=signed_by,
        method="POST",
        target="/v1/nodes/announce",
        content=content,
    )
    r = await tracker.client.post("/v1/nodes/announce", content=content, headers={**JSON, **header})
    assert_problem(r, 401, "unauthenticated", needle)
    assert await snapshot(tracker, m) == before


async def test_a_signature_covers_the_body_method_and_target(tracker: Running) -> None:
    m = await registered(tracker)
    before = await snapshot(tracker, m)
    url = f"/v1/files/{m.file_id}"
    signed_body = json.dumps(body(node("h1", free=5))).encode()
    tampered = json.dumps(body(node("h1", free=6))).encode()
    header = signed("POST", "/v1/nodes/announce", signed_body, "h1")
    r = await tracker.client.post(
        "/v1/nodes/announce", content=tampered, headers={**JSON, **header}
    )
    assert_problem(r, 401, "unauthenticated", "does not match")
    # the owner's delete of another target (a query it did not sign) or as another method
    header = signed("DELETE", f"{url}?node_id={nid('h1')}", b"", "owner")
    r = await tracker.client.delete(url, params={"node_id": nid("owner")}, headers=header)
    assert_problem(r, 401, "unauthenticated", "does not match")
    header = signed("POST", f"{url}?node_id={nid('owner')}", b"", "owner")
    r = await tracker.client.delete(url, params={"node_id": nid("owner")}, headers=header)
    assert_problem(r, 401, "unauthenticated", "does not match")
    assert await snapshot(tracker, m) == before


# --- replays and stale times ----------------------------------------------------------------


async def test_a_replayed_announce_is_refused(tracker: Running) -> None:
    m = await registered(tracker)
    content = json.dumps(body(node("h2", free=777))).encode()
    headers = {**JSON, **signed("POST", "/v1/nodes/announce", content, "h2")}
    first = await tracker.client.post("/v1/nodes/announce", content=content, headers=headers)
    assert first.status_code == 200, first.text
    # time passes: an accepted replay would move h2's last_seen
    tracker.clock.advance(5)
    before = await snapshot(tracker, m)
    again = await tracker.client.post("/v1/nodes/announce", content=content, headers=headers)
    assert_problem(again, 401, "unauthenticated", "replay")
    assert await snapshot(tracker, m) == before


async def test_a_replayed_registration_does_not_bring_a_withdrawn_file_back(
    tracker: Running,
) -> None:
    await announce(tracker.client, node("owner"), node("h1"))
    m = manifest(2)
    content = json.dumps(body(registration(m, "owner", ["h1"]))).encode()
    headers = {**JSON, **signed("POST", "/v1/files", content, "owner")}
    first = await tracker.client.post("/v1/files", content=content, headers=headers)
    assert first.status_code == 201, first.text
    r = await tracker.client.delete(f"/v1/files/{m.file_id}", params={"node_id": nid("owner")})
    assert r.status_code == 200, r.text
    before = await snapshot(tracker, m)
    assert before["api"]["files"]["items"][0]["state"] == "deleted"
    again = await tracker.client.post("/v1/files", content=content, headers=headers)
    assert_problem(again, 401, "unauthenticated", "replay")
    assert await snapshot(tracker, m) == before
    # the owner may register it again with a new signature
    r = await tracker.client.post("/v1/files", content=content, headers=JSON)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("skew", "needle"), [(-3600, "behind"), (3600, "ahead of")])
async def test_a_request_signed_an_hour_away_is_refused(
    tracker: Running, skew: float, needle: str
) -> None:
    m = await registered(tracker)
    before = await snapshot(tracker, m)
    content = json.dumps(body(node("h1", free=3))).encode()
    header = sign_request(
        keys("h1"), "POST", "/v1/nodes/announce", body_sha256(content), now=time.time() + skew
    )
    r = await tracker.client.post("/v1/nodes/announce", content=content, headers={**JSON, **header})
    assert_problem(r, 401, "unauthenticated", needle)
    url = f"/v1/files/{m.file_id}"
    target = f"{url}?node_id={nid('owner')}"
    header = sign_request(keys("owner"), "DELETE", target, body_sha256(b""), now=time.time() + skew)
    r = await tracker.client.delete(url, params={"node_id": nid("owner")}, headers=header)
    assert_problem(r, 401, "unauthenticated", needle)
    assert await snapshot(tracker, m) == before


# --- owners ---------------------------------------------------------------------------------


async def test_a_file_owned_by_another_node_cannot_be_registered_or_claimed(
    tracker: Running,
) -> None:
    m = await registered(tracker)
    before = await snapshot(tracker, m)
    # h2 signs its own registration of the same file: the file id is owner's
    r = await tracker.client.post("/v1/files", json=body(registration(m, "h2", ["h2"])))
    assert_problem(r, 409, "conflict", m.file_id, "another node")
    # h2 signs a registration claiming owner: of this file, and of a new one
    for claimed in (m, manifest(3, seed=7, name="new.bin")):
        reg = body(registration(claimed, "owner", ["owner"]))
        r = await send_signed(tracker.client, "POST", "/v1/files", "h2", json=reg)
        assert_problem(r, 403, "forbidden", "owner", nid("h2"))
    assert await snapshot(tracker, m) == before
    assert before["api"]["files"]["total"] == 1
    assert before["api"]["detail"]["owner"] == nid("owner")


async def test_a_file_is_withdrawn_by_its_owner_only(tracker: Running) -> None:
    m = await registered(tracker)
    before = await snapshot(tracker, m)
    url = f"/v1/files/{m.file_id}"
    # h2 speaking for itself: not the owner
    r = await send_signed(tracker.client, "DELETE", url, "h2", params={"node_id": nid("h2")})
    assert_problem(r, 403, "forbidden")
    # h2 speaking for the owner
    r = await send_signed(tracker.client, "DELETE", url, "h2", params={"node_id": nid("owner")})
    assert_problem(r, 403, "forbidden", nid("h2"))
    assert await snapshot(tracker, m) == before
    listed = (await tracker.client.get("/v1/files")).json()["items"]
    assert [(f["file_id"], f["state"]) for f in listed] == [(m.file_id, "available")]
    assert (await tracker.client.get(url)).status_code == 200


# --- unsigned requests ----------------------------------------------------------------------


@dataclass
class Setup:
    """A registered file with a repair task handed to owner and an audit task handed to its
    challenger, so every state-changing route has something real to change."""

    m: Manifest
    repair: RepairTask
    audit: AuditTask
    challenger: str


async def full_setup(t: Running) -> Setup:
    m = await registered(t, target=2)
    [audit] = await t.state.audits.run_once(limit=1)
    challenger = ({nid("owner"), nid("h1")} - {audit.target_id}).pop()
    r = await t.client.post("/v1/nodes/announce", json=body(node(challenger)))
    assert audit in AnnounceAck.model_validate_json(r.content).audits
    # h1 lost the second chunk: the repair desk copies it from owner, its last holder
    r = await t.client.post(
        f"/v1/files/{m.file_id}/replicas", json={"node_id": nid("h1"), "lost": m.chunk_ids[1:]}
    )
    assert r.status_code == 200, r.text
    [planned] = await t.state.repairs.run_once()
    assert planned.source == nid("owner")
    r = await t.client.post("/v1/nodes/announce", json=body(node("owner")))
    [repair] = AnnounceAck.model_validate_json(r.content).repairs
    return Setup(m, repair, audit, challenger)


Request = tuple[str, str, dict[str, Any]]
"""method, URL and the keyword arguments of ``client.request``"""

ROUTES: dict[str, Callable[[Setup], Request]] = {
    "announce": lambda s: ("POST", "/v1/nodes/announce", {"json": body(node("h2", free=1))}),
    "register": lambda s: (
        "POST",
        "/v1/files",
        {"json": body(registration(manifest(1, seed=5, name="more.bin"), "h2", ["h2"]))},
    ),
    "leechers": lambda s: (
        "POST",
        f"/v1/files/{s.m.file_id}/leechers",
        {"json": {"node_id": nid("h2"), "state": "started"}},
    ),
    "replicas": lambda s: (
        "POST",
        f"/v1/files/{s.m.file_id}/replicas",
        {"json": {"node_id": nid("h2"), "held": s.m.chunk_ids}},
    ),
    "downloads": lambda s: (
        "POST",
        f"/v1/files/{s.m.file_id}/downloads",
        {"json": {"node_id": nid("h2"), "role": "leecher", "bytes": 10}},
    ),
    "reclaims": lambda s: (
        "POST",
        "/v1/reclaims",
        {"json": {"node_id": nid("h1"), "chunk_ids": s.m.chunk_ids[:1]}},
    ),
    "audits": lambda s: (
        "POST",
        "/v1/audits",
        {"json": {"node_id": s.challenger, "task_id": s.audit.task_id, "outcome": "failed"}},
    ),
    "repairs": lambda s: (
        "POST",
        "/v1/repairs",
        {"json": {"node_id": nid("owner"), "task_id": s.repair.task_id, "ok": True}},
    ),
    "lost": lambda s: (
        "POST",
        f"/v1/nodes/{nid('h1')}/lost",
        {"json": {"node_id": nid("h1"), "chunk_ids": s.m.chunk_ids[:1]}},
    ),
    "drain": lambda s: ("POST", f"/v1/nodes/{nid('h1')}/drain", {}),
    "offline": lambda s: ("POST", f"/v1/nodes/{nid('h1')}/offline", {}),
    "delete": lambda s: (
        "DELETE",
        f"/v1/files/{s.m.file_id}",
        {"params": {"node_id": nid("owner")}},
    ),
}


@pytest.mark.parametrize("route", list(ROUTES))
async def test_an_unsigned_request_to_a_state_changing_route_is_refused(
    tracker: Running, route: str
) -> None:
    s = await full_setup(tracker)
    before = await snapshot(tracker, s.m)
    method, url, kwargs = ROUTES[route](s)
    send: Callable[..., Awaitable[httpx.Response]] = tracker.client.request
    r = await send(method, url, auth=None, **kwargs)  # auth=None: not the signing auth
    assert HEADER not in r.request.headers
    assert_problem(r, 401, "unauthenticated", "must be signed")
    assert await snapshot(tracker, s.m) == before
    # the very same request, signed by the node it speaks for, is accepted and changes things
    r = await send(method, url, **kwargs)
    assert HEADER in r.request.headers
    assert r.is_success, r.text
    assert await snapshot(tracker, s.m) != before
