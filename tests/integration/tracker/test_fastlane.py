"""The fast lane (``tracker/fastlane.py``): it answers plain JSON announces and file details
exactly as the FastAPI routes do, and hands everything else on to the app, body included."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from p2pshare.security.signing import body_sha256, sign_request
from p2pshare.tracker import fastlane
from p2pshare.tracker.fastlane import FastLane
from tests.integration.tracker.conftest import Running, StartTracker
from tests.integration.tracker.support import (
    announce,
    body,
    keys,
    manifest,
    nid,
    node,
    registration,
    signed,
)

ANNOUNCE = "/v1/nodes/announce"
LANE = "application/json"
ROUTE = "application/vnd.p2pshare+json"
"""A JSON content type the lane leaves to FastAPI (which parses it as JSON all the same)."""


def good(label: str = "a", free: int = 10**9) -> bytes:
    return json.dumps(body(node(label, free=free))).encode()


def sign(content: bytes, label: str = "a", **kw: Any) -> dict[str, str]:
    return signed("POST", ANNOUNCE, content, label) | kw


Case = Callable[[], tuple[bytes, dict[str, str]]]
CASES: dict[str, tuple[int, Case]] = {
    "ok": (200, lambda: (good(), sign(good()))),
    "unsigned": (401, lambda: (good(), {})),
    "body-not-signed": (401, lambda: (good(free=1), sign(good(free=2)))),
    "another-node": (403, lambda: (good("b"), sign(good("b"), "a"))),
    "bad-field": (422, lambda: (c := changed(free_bytes=-1), sign(c))),
    "extra-field": (422, lambda: (c := changed(x=1), sign(c))),
    "bad-node-id": (422, lambda: (c := changed(node_id="a/../b"), sign(c))),
    "null-field": (
        422,
        lambda: (c := json.dumps({**body(node("a")), "name": None}).encode(), sign(c)),
    ),
    "no-name": (
        422,
        lambda: (
            c := json.dumps({k: v for k, v in body(node("a")).items() if k != "name"}).encode(),
            sign(c),
        ),
    ),
    "not-json": (422, lambda: (b"{not json", sign(b"{not json"))),
    "not-json-unsigned": (422, lambda: (b"{not json", {})),
    "not-utf8": (400, lambda: (b'{"a": "\xff"}', sign(b'{"a": "\xff"}'))),
    "a-list": (422, lambda: (b"[1, 2]", sign(b"[1, 2]"))),
    "a-list-unsigned": (401, lambda: (b"[1, 2]", {})),
    "empty": (422, lambda: (b"", sign(b""))),
    "stale": (
        401,
        lambda: (
            good(),
            sign_request(keys("a"), "POST", ANNOUNCE, body_sha256(good()), now=time.time() - 3600),
        ),
    ),
}


STALE_FIGURE = re.compile(r"(?<=the request's time is )(\d+)(?= s behind)")


def without_skew(answer: Any) -> Any:
    """Return ``answer`` (status, content type, problem body, ...) with the seconds a stale
    request is behind masked: that figure counts from the signing to the check, on the wall
    clock, so two requests may round it apart (3600 and 3601) under load. The figure itself
    must be the stale case's hour plus at most the test's own bounded waits."""
    status, content_type, problem, *rest = answer
    detail = problem.get("detail", "") if isinstance(problem, dict) else ""
    found = STALE_FIGURE.search(detail)
    if not found:
        return answer
    assert 3600 <= int(found.group(1)) <= 3600 + 30, detail
    masked = {**problem, "detail": STALE_FIGURE.sub("N", detail)}
    return (status, content_type, masked, *rest)


def changed(**fields: Any) -> bytes:
    return json.dumps({**body(node("a")), **fields}).encode()


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_lane_answers_as_the_route(
    start_tracker: StartTracker, tmp_path: Path, case: str
) -> None:
    """Each request gets the same status, type and body from the lane as from FastAPI, and
    changes the same (a tracker each, so neither sees what the other changed)."""
    status, make = CASES[case]
    answers = []
    for where, content_type in enumerate((LANE, ROUTE)):
        async with start_tracker(data_dir=tmp_path / str(where)) as t:
            content, headers = make()  # signed now: a stale time is as stale in both
            r = await t.client.post(
                ANNOUNCE,
                content=content,
                headers={"content-type": content_type, **headers},
                auth=None,  # sent as made: the client does not sign what is left unsigned
            )
            known = t.state.liveness.get(nid("a")) is not None
            answers.append((r.status_code, r.headers["content-type"], r.json(), known))
    assert without_skew(answers[0]) == without_skew(answers[1])
    assert answers[0][0] == status, answers[0]
    assert answers[0][3] == (status == 200)


async def test_a_replay_is_refused_by_the_lane_and_the_route_alike(tracker: Running) -> None:
    content = good()
    for content_type in (LANE, ROUTE):
        headers = {"content-type": content_type, **sign(content)}
        first = await tracker.client.post(ANNOUNCE, content=content, headers=headers)
        assert first.status_code == 200, first.text
        again = await tracker.client.post(ANNOUNCE, content=content, headers=headers)
        assert again.status_code == 401
        assert "replay" in again.json()["detail"]


# --- what the lane takes, and what it hands on ---------------------------------------------


class Inner:
    """The app behind the lane: records what reached it, answers 418."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def through_lane(
    t: Running,
    content: bytes,
    *,
    method: str = "POST",
    path: str = ANNOUNCE,
    content_type: bytes = b"application/json",
    pieces: int = 1,
) -> tuple[int, Inner]:
    """Send one request straight to an :class:`FastLane` (``content`` in ``pieces``
    messages); return the status answered and the inner app."""
    inner = Inner()
    lane = FastLane(inner)
    step = max(1, -(-len(content) // pieces))
    messages = [
        {"type": "http.request", "body": content[i : i + step], "more_body": True}
        for i in range(0, len(content), step)
    ] or [{"type": "http.request", "body": b"", "more_body": True}]
    messages[-1]["more_body"] = False
    headers = [(b"content-type", content_type)]
    for name, value in sign(content).items():
        headers.append((name.lower().encode(), value.encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "app": SimpleNamespace(state=SimpleNamespace(tracker=t.state)),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await lane(scope, receive, send)
    return sent[0]["status"], inner


async def test_the_lane_answers_a_plain_json_announce_itself(tracker: Running) -> None:
    status, inner = await through_lane(tracker, good(), pieces=3)
    assert (status, inner.bodies) == (200, [])
    assert tracker.state.liveness.get(nid("a")) is not None


@pytest.mark.parametrize(
    ("content", "kw"),
    [
        (b"{not json", {}),
        (b"", {}),
        (b"[1]", {}),
        (b"{}", {"content_type": b"text/plain"}),
        (b"{}", {"content_type": b"application/x+json"}),
        (b"{}", {"method": "PUT"}),
        (b"{}", {"path": ANNOUNCE + "/"}),
    ],
    ids=["not-json", "empty", "not-an-object", "text", "other-json", "put", "other-path"],
)
async def test_the_lane_hands_on_what_it_does_not_take_with_its_body(
    tracker: Running, content: bytes, kw: dict[str, Any]
) -> None:
    status, inner = await through_lane(tracker, content, pieces=2, **kw)
    assert (status, inner.bodies) == (418, [content])
    assert len(tracker.state.replays) == 0  # no signature was checked (or remembered)


# --- file details --------------------------------------------------------------------------


async def test_a_detail_from_the_lane_is_the_route_s(
    tracker: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    await announce(tracker.client, node("owner"), node("h1"), node("h2"))
    kept, gone = manifest(3), manifest(2, seed=7)
    for m in (kept, gone):
        reg = registration(m, nid("owner"), [nid("h1"), nid("h2")])
        r = await tracker.client.post("/v1/files", json=body(reg))
        assert r.status_code == 201, r.text
    r = await tracker.client.delete(f"/v1/files/{gone.file_id}", params={"node_id": nid("owner")})
    assert r.status_code == 200, r.text
    urls = [
        f"/v1/files/{kept.file_id}",
        f"/v1/files/{kept.file_id}?x=1",
        f"/v1/files/{gone.file_id}",
        "/v1/files/" + "0" * 64,
        "/v1/files/" + "A" * 64,
        "/v1/files/abc",
    ]

    async def answers() -> list[tuple[int, str, Any]]:
        out = []
        for url in urls:
            r = await tracker.client.get(url)
            out.append((r.status_code, r.headers["content-type"], r.json()))
        return out

    lane = await answers()
    monkeypatch.setattr(fastlane, "is_valid_id", lambda _value: False)  # FastAPI answers all
    route = await answers()
    assert lane == route
    assert [status for status, _, _ in lane] == [200, 200, 404, 404, 400, 400]
