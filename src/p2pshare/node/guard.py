"""A node's peer API against hostile clients: rates, connections, bodies, slow senders.

What aiohttp's server does by itself, and what is added here:

- request heads: a line over 8190 bytes, a field over 8190 bytes or more than 128 headers is
  refused (400/431, connection closed), so a 10 MB header never gets in;
- slow heads: nothing by default (``keepalive_timeout`` is an hour). aiohttp's keep-alive
  timer closes a connection still waiting for a complete request head when it fires, and it
  runs from the connection's start and from the end of each response; :meth:`PeerGuard.
  runner_options` sets it to ``header_timeout``, so a slow-loris is cut off after that long
  (and an idle kept-alive connection too: longer than the 15 s clients keep theirs);
- bodies: ``client_max_size`` bounds what ``request.read()`` takes, but only once that much
  has been read, and a streamed body has no bound; nothing limits how slowly a body comes.
  :meth:`PeerGuard.middleware` refuses a declared length above ``client_max_size`` with 413
  before reading, and reads every body whole itself, under a deadline, except for the
  handlers marked :func:`streamed_body`, which read with :func:`body_pieces` (each 64 KiB
  within ``body_timeout`` of waiting; a stalled body gets 408 and the connection is closed);
- connections and request rates: nothing; the middleware answers 503 past
  ``max_connections`` open connections and 429 (with ``Retry-After``) to an address past its
  token bucket (:class:`~p2pshare.core.admission.SourceTable`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from p2pshare.core.admission import (
    CLIENT_KEEPALIVE,
    DEFAULT_BODY_TIMEOUT,
    ServerLimits,
    SourceTable,
    retry_after,
)
from p2pshare.core.deadlines import BODY_WINDOW, BodyPace
from p2pshare.core.errors import PayloadTooLarge, TooManyRequests, Unavailable
from p2pshare.core.problems import problem_for_error, problem_for_http
from p2pshare.core.sizes import format_size
from p2pshare.node.problems import problem_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

STREAMED = "__p2pshare_streamed_body__"
UNKNOWN_SOURCE = "unknown"
MAX_LINGER = 10.0
"""Most seconds the rest of a refused body is read and dropped (aiohttp's default)."""


def streamed_body(handler: H) -> H:
    """Mark ``handler`` as reading its body itself, piece by piece (:func:`body_pieces`);
    the guard then leaves the body to it instead of reading it whole first."""
    setattr(handler, STREAMED, True)
    return handler


class BodyStalled(web.HTTPRequestTimeout):
    """A request body that did not keep the pace: answered 408 (the guard then closes the
    connection)."""

    def __init__(self, detail: str) -> None:
        super().__init__(reason=detail)


class PeerGuard:
    """The limits of one peer API server (see the module docstring).

    Give :meth:`runner_options` to its ``AppRunner``, :meth:`middleware` to its app (inside
    the problems middleware) and, once the runner is set up, its server to :meth:`attach`.
    """

    def __init__(
        self, limits: ServerLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sources = SourceTable.of(limits)
        self._server: web.Server | None = None

    def runner_options(self) -> dict[str, Any]:
        """Return the ``AppRunner`` keyword arguments that bound slow clients.

        aiohttp's keep-alive timer is also its head timer, so an idle kept-alive connection is
        kept ``header_timeout`` too: at :data:`~p2pshare.core.admission.CLIENT_KEEPALIVE`
        seconds or less, it is closed before the other nodes give theirs up, and a request
        sent on one just then fails once. Allowed (tests cut slow clients off in 2 s), but
        logged as a warning."""
        if self.limits.header_timeout <= CLIENT_KEEPALIVE:
            log.warning(
                "header_timeout is %g s: this node closes idle connections that soon, before"
                " the %g s other nodes keep them, so their requests now and then fail once;"
                " more than %g s avoids it",
                self.limits.header_timeout,
                CLIENT_KEEPALIVE,
                CLIENT_KEEPALIVE,
            )
        return {
            "keepalive_timeout": self.limits.header_timeout,
            "lingering_time": min(MAX_LINGER, self.limits.body_timeout),
        }

    def attach(self, server: web.Server | None) -> None:
        """Count the open connections of ``server`` (the runner's, once set up)."""
        self._server = server

    @property
    def open_connections(self) -> int:
        """Return the connections the attached server has open."""
        return len(self._server.connections) if self._server is not None else 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse what is over a limit, read the body under its deadline, then serve."""
        source = request.remote or UNKNOWN_SOURCE
        wait = self._sources.admit(source, self._clock())
        if wait:
            seconds = retry_after(wait)
            error = TooManyRequests(
                f"more than {self.limits.rate:g} requests a second from {source}; "
                f"retry in {seconds} s"
            )
            resp = problem_response(problem_for_error(error))
            resp.headers["Retry-After"] = str(seconds)
            if request.body_exists:
                resp.force_close()  # its body is not read
            return resp
        if self.open_connections > self.limits.max_connections:
            resp = problem_response(
                problem_for_error(
                    Unavailable(
                        f"this node serves {self.limits.max_connections} connections at "
                        "once; try again later"
                    )
                )
            )
            resp.force_close()
            return resp
        try:
            if request.body_exists and not getattr(request.match_info.handler, STREAMED, False):
                await self._read_whole(request)
            return await handler(request)
        except BodyStalled as exc:
            resp = problem_response(problem_for_http(exc.status, exc.reason))
            resp.force_close()
            return resp

    async def _read_whole(self, request: web.Request) -> None:
        """Read the body (cached for the handler's ``request.read()``) within its deadline."""
        limit = request.client_max_size
        declared = request.content_length
        if declared is not None and declared > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes is above the {format_size(limit)} "
                "this node accepts"
            )
        windows = math.ceil(max(1, declared if declared is not None else limit) / BODY_WINDOW)
        try:
            async with asyncio.timeout(self.limits.body_timeout * windows):
                await request.read()
        except TimeoutError:
            log.info("cut off a stalled request body from %s", request.remote)
            raise BodyStalled(
                f"the request body did not arrive within {self.limits.body_timeout:g} s "
                f"per {format_size(BODY_WINDOW)}"
            ) from None


GUARD = web.AppKey("guard", PeerGuard)
"""The app's guard, read by :func:`body_pieces` (optional: default deadlines without it)."""


def body_timeout(request: web.Request) -> float:
    """Return the seconds a peer may keep a body waiting (the guard's ``body_timeout``)."""
    guard = request.app.get(GUARD)
    return guard.limits.body_timeout if guard is not None else DEFAULT_BODY_TIMEOUT


async def body_pieces(request: web.Request, size: int) -> AsyncIterator[bytes]:
    """Yield the request body in pieces of at most ``size`` bytes, each window of it within
    ``body_timeout`` seconds of waiting (:class:`~p2pshare.core.deadlines.BodyPace`).

    Raises :class:`BodyStalled` (408, connection closed) when the body falls behind. Time
    the caller spends between pieces (writing, pacing) does not count against the sender.
    """
    timeout = body_timeout(request)
    pace = BodyPace(timeout)
    loop = asyncio.get_running_loop()
    pieces = aiter(request.content.iter_chunked(size))
    while True:
        started = loop.time()
        try:
            async with asyncio.timeout(pace.allowance()):
                piece = await anext(pieces)
        except StopAsyncIteration:
            return
        except TimeoutError:
            log.info("cut off a stalled body from %s", request.remote)
            raise BodyStalled(
                f"the body did not arrive within {timeout:g} s per {format_size(BODY_WINDOW)}"
            ) from None
        pace.record(len(piece), loop.time() - started)
        yield piece
