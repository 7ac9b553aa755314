"""Helpers for the tracker tests: nodes, manifests and registrations built from plain values."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from collections.abc import Generator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pshare.core.ids import is_valid_node_id
from p2pshare.core.manifest import Manifest, manifest_of_bytes
from p2pshare.core.messages import (
    ChunkAck,
    FileRegistration,
    NodeAnnounce,
    Placement,
)
from p2pshare.security.keys import KeyPair
from p2pshare.security.signing import HEADER, body_sha256, sign_request

KiB = 1024
CHUNK = 64 * KiB
CREATED = datetime(2030, 1, 1, tzinfo=UTC)


_BY_ID: dict[str, KeyPair] = {}


@functools.cache
def keys(label: str) -> KeyPair:
    """Return the test key pair of ``label`` (derived from it: the same in every run)."""
    pair = KeyPair.of(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest()))
    _BY_ID[pair.node_id] = pair
    return pair


def nid(label: str) -> str:
    """Return the node id of test node ``label`` (a node id is returned as it is)."""
    return label if is_valid_node_id(label) else keys(label).node_id


def signed(method: str, target: str, body: bytes, label: str) -> dict[str, str]:
    """Return the signature header of a request by test node ``label``."""
    return sign_request(keys(label), method, target, body_sha256(body), now=time.time())


class SignAsSender(httpx.Auth):
    """Sign each request that changes something as the test node it speaks for: the body's
    ``node_id``, ``owner`` or ``requester``, else the node in the path or the ``node_id``
    query. A request that already has a signature header, or names no known test node, is
    sent as it is (tests of refusals build their own)."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the header and send."""
        if request.method in ("POST", "PUT", "DELETE") and HEADER not in request.headers:
            try:
                who = _speaker(request)
            except httpx.RequestNotRead:
                who = None  # a streamed body: sent unsigned, as it is (not read into memory)
            if who in _BY_ID:
                target = request.url.raw_path.decode()
                request.headers.update(
                    sign_request(
                        _BY_ID[who],
                        request.method,
                        target,
                        body_sha256(request.content),
                        now=time.time(),
                    )
                )
        yield request


async def send_signed(
    client: httpx.AsyncClient, method: str, url: str, label: str, **kwargs: Any
) -> httpx.Response:
    """Send a request signed by test node ``label`` whatever it says, e.g. a request naming
    a node id that is not well-formed (which :class:`SignAsSender` would leave unsigned), so
    the check under test is reached rather than the signature check."""
    request = client.build_request(method, url, **kwargs)
    request.headers.update(signed(method, request.url.raw_path.decode(), request.content, label))
    return await client.send(request)


def ids(*labels: str) -> list[str]:
    """Return the node ids of test nodes ``labels``, sorted (the order the tracker lists
    nodes that tie, e.g. a chunk's online holders)."""
    return sorted(nid(label) for label in labels)


def _speaker(request: httpx.Request) -> str | None:
    if request.content:
        try:
            doc = json.loads(request.content)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for field in ("node_id", "owner", "requester"):
                if isinstance(doc.get(field), str):
                    return doc[field]  # type: ignore[no-any-return]
    parts = request.url.path.split("/")
    if len(parts) > 3 and parts[2] == "nodes":
        return parts[3]
    return request.url.params.get("node_id")


def node(
    node_id: str, *, free: int = 10**9, offered: int = 2 * 10**9, used: int = 0
) -> NodeAnnounce:
    """Return an announce of test node ``node_id`` (a label or an id) on a made-up loopback
    address."""
    label = node_id
    node_id = nid(label)
    port = 7100 + sum(node_id.encode()) % 800
    return NodeAnnounce(
        node_id=node_id,
        name=f"node {label}",
        address=f"http://127.0.0.1:{port}",
        offered_bytes=offered,
        used_bytes=used,
        free_bytes=free,
    )


def data_of(n_chunks: int, seed: int = 1, tail: int = 1000) -> bytes:
    """Return random bytes that cut into ``n_chunks`` chunks (the last one ``tail`` bytes)."""
    rng = random.Random(seed)
    return rng.randbytes((n_chunks - 1) * CHUNK + tail)


def manifest(n_chunks: int = 3, *, seed: int = 1, name: str = "file.bin") -> Manifest:
    """Return a valid manifest of ``n_chunks`` chunks of 64 KiB."""
    return manifest_of_bytes(data_of(n_chunks, seed), name, CREATED, CHUNK)


def chunk_sizes(m: Manifest) -> dict[str, int]:
    """Return each chunk id's size in bytes."""
    sizes = {}
    for i, cid in enumerate(m.chunk_ids):
        sizes[cid] = m.chunk_size if i < len(m.chunk_ids) - 1 else m.size - i * m.chunk_size
    return sizes


def registration(
    m: Manifest,
    owner: str,
    holders: Iterable[str] | Mapping[str, Iterable[str]],
    *,
    replica_target: int = 1,
) -> FileRegistration:
    """Return a registration of ``m``: each chunk on ``holders`` (or per chunk id), all acked."""
    sizes = chunk_sizes(m)
    per_chunk: dict[str, list[str]]
    if isinstance(holders, Mapping):
        per_chunk = {cid: [nid(h) for h in holders[cid]] for cid in holders}
    else:
        hs = [nid(h) for h in holders]
        per_chunk = {cid: hs for cid in dict.fromkeys(m.chunk_ids)}
    return FileRegistration(
        manifest=m,
        owner=nid(owner),
        replica_target=replica_target,
        placement=[Placement(chunk_id=c, holders=h) for c, h in per_chunk.items()],
        acks=[
            ChunkAck(node_id=n, chunk_id=c, size=sizes[c]) for c, h in per_chunk.items() for n in h
        ],
    )


def body(model: Any) -> dict[str, Any]:
    """Return a model as the JSON-ready dict a client sends."""
    return model.model_dump(mode="json")


async def announce(client: httpx.AsyncClient, *nodes: NodeAnnounce) -> None:
    """Announce each node; fail on any error."""
    for a in nodes:
        r = await client.post("/v1/nodes/announce", json=body(a))
        assert r.status_code == 200, r.text


def assert_problem(r: httpx.Response, status: int, code: str, *needles: str) -> dict[str, Any]:
    """Assert ``r`` is a problem+json of ``status`` and type ``urn:p2pshare:<code>``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc = r.json()
    assert doc["type"] == f"urn:p2pshare:{code}", doc
    assert doc["status"] == status
    assert doc["title"]
    for needle in needles:
        assert needle in doc["detail"] or needle in str(doc.get("errors")), doc
    return doc
