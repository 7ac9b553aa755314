"""The tracker against hostile clients: per-source rate limits, head size, slow senders.

What uvicorn (with httptools) does by itself, and what is added here:

- connections: ``limit_concurrency`` answers 503 once that many connections (or requests) are
  open; :func:`uvicorn_options` sets it from :attr:`ServerLimits.max_connections`; an idle
  kept-alive connection is closed after 5 s, before the nodes' clients give theirs up:
  :func:`uvicorn_options` makes it ``idle_timeout`` (``header_timeout``, at least 20 s);
- bodies: nothing; :class:`~p2pshare.tracker.limits.BodySizeLimit` refuses a declared or
  streamed body above ``max_body_size`` with 413 before reading it;
- request heads: httptools has no size limit and no time limit (a 10 MB header is read and
  served; a client sending a byte a second holds its connection for ever; uvicorn's
  keep-alive timer only runs between requests and stops at the first byte).
  :class:`GuardedHttpToolsProtocol` answers 431 to a head larger than ``max_header_size`` and
  closes a connection whose head or body does not keep the pace of
  :class:`~p2pshare.core.deadlines.ReadDeadline`;
- request rates: nothing; :class:`SourceRateLimit` answers 429 (problem+json, with
  ``Retry-After``) to a client address past its token bucket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from p2pshare.core.admission import ServerLimits, SourceTable, retry_after
from p2pshare.core.deadlines import Phase, ReadDeadline
from p2pshare.core.errors import TooManyRequests
from p2pshare.core.sizes import format_size
from p2pshare.tracker.problems import problem_for_error, problem_response

log = logging.getLogger(__name__)

UNKNOWN_SOURCE = "unknown"


class RateGate:
    """The per-source rate: at most ``limits.rate`` requests a second (``limits.burst`` at
    once) from one client address. One gate serves :class:`SourceRateLimit` and the announce
    lane below ASGI (:mod:`p2pshare.tracker.fastlane`), so every request counts once."""

    def __init__(self, limits: ServerLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._sources = SourceTable.of(limits)

    def refusal(self, scope: Scope) -> Response | None:
        """Count the request of ``scope``; return None when it may be served, else the 429
        problem (with ``Retry-After``) to answer it with."""
        client = scope.get("client")
        source = str(client[0]) if client else UNKNOWN_SOURCE
        wait = self._sources.admit(source, self._clock())
        if not wait:
            return None
        seconds = retry_after(wait)
        error = TooManyRequests(
            f"more than {self.limits.rate:g} requests a second from {source}; retry in {seconds} s"
        )
        headers = {"retry-after": str(seconds)}
        if _has_body(scope):
            headers["connection"] = "close"  # its body is not read
        return problem_response(problem_for_error(error), headers=headers)


class SourceRateLimit:
    """ASGI middleware: the :class:`RateGate`'s 429 to a source past its rate."""

    def __init__(
        self,
        app: ASGIApp,
        limits: ServerLimits,
        clock: Callable[[], float] = time.monotonic,
        gate: RateGate | None = None,
    ) -> None:
        self.app = app
        self.gate = gate or RateGate(limits, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request when its source is over its rate; pass it on otherwise."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.gate.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await refusal(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 40\r\n\r\n"
    b"the request head did not arrive in time\n"
)
_TOO_LARGE_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 34\r\n\r\n"
    b"the request head is over the limit"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head and a read deadline.

    Build the class for some limits with :func:`guarded_protocol`; uvicorn makes one instance
    per connection. The head is counted per read, so it is refused within one read (at most
    some 256 KiB) of ``max_header_size``.
    """

    limits: ClassVar[ServerLimits] = ServerLimits()

    def connection_made(self, transport: Any) -> None:
        """Start the connection's read deadline with uvicorn's bookkeeping."""
        super().connection_made(transport)
        self._deadline = ReadDeadline(
            self.limits.header_timeout,
            self.limits.body_timeout,
            self.loop.time(),
            self.limits.idle_timeout,
        )
        self._head_bytes = 0
        self._timer: Any = None
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline's timer, then close as uvicorn does."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; refuse the head when it has grown past the limit."""
        super().data_received(data)
        if self.transport.is_closing() or self._deadline.phase is not Phase.HEAD:
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_header_size:
            log.info(
                "refused a request head over %s from %s",
                format_size(self.limits.max_header_size),
                _peer(self),
            )
            self.transport.write(_TOO_LARGE_431)
            self.transport.close()

    def on_message_begin(self) -> None:
        """A new request starts: its head is counted, and due, from here."""
        super().on_message_begin()
        self._head_bytes = 0
        self._deadline.message_begin(self.loop.time())
        self._arm()

    def on_headers_complete(self) -> None:
        """The head is in: the body's pace applies from now."""
        self._deadline.head_done(self.loop.time())
        self._head_bytes = 0
        super().on_headers_complete()
        self._arm()

    def on_body(self, body: bytes) -> None:
        """Body bytes arrived: they keep the pace."""
        self._deadline.body(len(body), self.loop.time())
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The whole request is read: no deadline while it is answered."""
        self._deadline.message_done(self.loop.time())
        super().on_message_complete()
        self._arm()

    def on_response_complete(self) -> None:
        """The response went out: the next request may wait ``idle_timeout`` to begin."""
        self._deadline.response_done(self.loop.time())
        super().on_response_complete()
        self._arm()

    # -- the timer ------------------------------------------------------------------------

    def _arm(self) -> None:
        """Make sure the timer fires no later than the deadline (or not at all without one)."""
        due = self._deadline.due()
        if due is None:
            return  # a timer still set fires, finds no deadline and stops
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        deadline = self._deadline
        if deadline.phase is Phase.BODY and self.flow.read_paused:
            deadline.paused(now)  # the app is behind on the body, not the client
        elif deadline.phase is Phase.HEAD and self.cycle and not self.cycle.response_complete:
            deadline.paused(now)  # an earlier (pipelined) request is still being answered
        if not deadline.expired(now):
            self._arm()
            return
        if deadline.phase is Phase.IDLE or (deadline.phase is Phase.HEAD and not self._head_bytes):
            log.debug("closed an idle connection from %s", _peer(self))
        elif deadline.phase is Phase.HEAD:
            log.info(
                "closed a connection from %s: no complete request head within %g s",
                _peer(self),
                deadline.header_timeout,
            )
            self.transport.write(_TIMEOUT_408)
        else:
            log.info(
                "closed a connection from %s: its request body stalled (%g s)",
                _peer(self),
                self.limits.body_timeout,
            )
        self.transport.close()


def _peer(protocol: HttpToolsProtocol) -> str:
    client = protocol.client
    return f"{client[0]}:{client[1]}" if client else UNKNOWN_SOURCE


def guarded_protocol(limits: ServerLimits) -> type[GuardedHttpToolsProtocol]:
    """Return the HTTP protocol class for uvicorn that keeps ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def uvicorn_options(
    limits: ServerLimits, protocol: type[GuardedHttpToolsProtocol] | None = None
) -> dict[str, Any]:
    """Return the :class:`uvicorn.Config` arguments that keep ``limits`` (``http``: ``protocol``,
    a class built for ``limits``, or :func:`guarded_protocol`'s; ``limit_concurrency``:
    uvicorn answers 503 from ``limit_concurrency`` open connections, one more than the
    connections served; ``timeout_keep_alive``: an idle kept-alive connection is closed after
    ``idle_timeout``, and not uvicorn's 5 s: shorter than the nodes keep theirs
    (``core.admission.CLIENT_KEEPALIVE``), a node's next call could meet a connection closed
    as it was sent)."""
    return {
        "http": protocol or guarded_protocol(limits),
        "limit_concurrency": limits.max_connections + 1,
        "timeout_keep_alive": limits.idle_timeout,
    }
