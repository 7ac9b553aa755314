"""The body limit middleware, driven with plain ASGI messages (no server, no sockets)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from p2pshare.tracker.limits import BodySizeLimit

LIMIT = 100


class EchoLength:
    """An app that reads the whole body and answers with its length."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


async def call(app: Any, chunks: list[bytes], content_length: int | None) -> list[Message]:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def status_and_body(sent: list[Message]) -> tuple[int, bytes]:
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    return start[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_small_bodies_pass() -> None:
    app = EchoLength()
    sent = await call(BodySizeLimit(app, LIMIT), [b"x" * 60, b"y" * 40], None)
    assert status_and_body(sent) == (200, b"100")


async def test_declared_length_over_the_limit_never_reaches_the_app() -> None:
    app = EchoLength()
    sent = await call(BodySizeLimit(app, LIMIT), [b"x" * 101], 101)
    status, body = status_and_body(sent)
    assert status == 413
    assert json.loads(body)["type"] == "urn:p2pshare:payload-too-large"
    assert app.calls == 0
    start = sent[0]
    assert (b"connection", b"close") in start["headers"]


async def test_streamed_body_over_the_limit_is_cut_off() -> None:
    app = EchoLength()
    sent = await call(BodySizeLimit(app, LIMIT), [b"x" * 60, b"y" * 60, b"z" * 60], None)
    status, body = status_and_body(sent)
    assert status == 413
    assert json.loads(body)["status"] == 413
    assert app.calls == 1


async def test_lying_content_length_is_still_counted() -> None:
    sent = await call(BodySizeLimit(EchoLength(), LIMIT), [b"x" * 80, b"y" * 80], 10)
    assert status_and_body(sent)[0] == 413


async def test_other_scopes_pass_through() -> None:
    seen = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    await BodySizeLimit(app, LIMIT)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
