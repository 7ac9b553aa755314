"""The request body limit: a pure ASGI middleware (every buffer has a limit, style.md 4).

A request whose ``Content-Length`` is above the limit is answered 413 before any of its body
is read. A body without a length (chunked) is counted as it streams; when it passes the limit
the app's reading stops, whatever the app would have answered is dropped, and the client gets
the same 413 problem. The connection is closed after a 413, since the rest of the body was
never read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2pshare.core.errors import PayloadTooLarge
from p2pshare.core.sizes import format_size
from p2pshare.tracker.problems import problem_for_error, problem_response


class _BodyTooLarge(Exception):
    """Raised into the app when its body passes the limit."""


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with a 413 problem."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a receive channel that counts the body's bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # our 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(
            f"request body is larger than the limit of {format_size(self.max_bytes)}"
        )
        response = problem_response(problem_for_error(error), headers={"connection": "close"})
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
