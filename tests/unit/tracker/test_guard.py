"""The per-source rate limit middleware, driven with plain ASGI messages (no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from p2pshare.core.admission import CLIENT_KEEPALIVE, IDLE_FLOOR, ServerLimits
from p2pshare.tracker.guard import SourceRateLimit, guarded_protocol, uvicorn_options


class Ok:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def call(app: Any, client: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/health",
        "headers": headers or [],
        "client": (client, 5555),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


async def test_a_source_past_its_burst_gets_429_with_retry_after() -> None:
    inner, clock = Ok(), FakeClock()
    app = SourceRateLimit(inner, ServerLimits(rate=2, burst=2), clock=clock)
    assert (await call(app, "10.0.0.1"))[0] == 200
    assert (await call(app, "10.0.0.1"))[0] == 200
    status, headers, body = await call(app, "10.0.0.1")
    assert status == 429
    assert headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/problem+json"
    problem = json.loads(body)
    assert problem["type"] == "urn:p2pshare:too-many-requests"
    assert "10.0.0.1" in problem["detail"]
    assert b"connection" not in headers  # no body left unread: the connection may stay
    assert inner.calls == 2
    # another source is not held back, and the first one is served after its wait
    assert (await call(app, "10.0.0.2"))[0] == 200
    clock.now += 0.5
    assert (await call(app, "10.0.0.1"))[0] == 200


async def test_a_refused_request_with_a_body_closes_the_connection() -> None:
    app = SourceRateLimit(Ok(), ServerLimits(rate=1, burst=1), clock=FakeClock())
    await call(app, "10.0.0.1")
    status, headers, _ = await call(app, "10.0.0.1", [(b"content-length", b"10")])
    assert status == 429
    assert headers[b"connection"] == b"close"


async def test_other_scopes_pass() -> None:
    inner = Ok()
    app = SourceRateLimit(inner, ServerLimits(rate=1, burst=1), clock=FakeClock())

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        del message

    for _ in range(3):
        await app({"type": "lifespan"}, receive, send)
    assert inner.calls == 3


def test_uvicorn_gets_the_guarded_protocol_and_the_connection_cap() -> None:
    limits = ServerLimits(max_connections=7, header_timeout=3)
    options = uvicorn_options(limits)
    assert options["limit_concurrency"] == 8
    assert options["http"].limits is limits
    assert options["timeout_keep_alive"] == 20  # idle: at least IDLE_FLOOR, not the 3 s
    assert guarded_protocol(ServerLimits()).limits == ServerLimits()


@pytest.mark.parametrize("header_timeout", [2.0, 15.0, 20.0, 60.0])
def test_an_idle_connection_is_kept_longer_than_the_nodes_keep_theirs(
    header_timeout: float,
) -> None:
    # the client gives it up first: never a request sent on a connection being closed, however
    # short the head deadline
    limits = ServerLimits(header_timeout=header_timeout)
    assert uvicorn_options(limits)["timeout_keep_alive"] > CLIENT_KEEPALIVE
    assert limits.idle_timeout == max(header_timeout, IDLE_FLOOR)
