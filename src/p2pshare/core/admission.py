"""Who may be served: the limits of a server facing the network, and requests per source.

:class:`ServerLimits` gathers what the tracker and a node's peer API bound for every client
(requests per second per address, connections, time to send a request head or a body, size of
a head); the settings turn into one at the entry point. :class:`SourceTable` keeps one
:class:`~p2pshare.core.ratelimit.TokenBucket` per source address and says whether a request
may pass or how long its sender must wait. Pure: the caller passes the time.

The defaults are generous on purpose: tests and the demo run many nodes from one address,
so a source is only held back when it sends thousands of requests a second.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from p2pshare.core.errors import ConfigError
from p2pshare.core.ratelimit import TokenBucket

DEFAULT_RATE = 5000.0
DEFAULT_BURST = 20_000
DEFAULT_MAX_SOURCES = 4096
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_HEADER_TIMEOUT = 20.0
CLIENT_KEEPALIVE = 15.0
"""Seconds a node's HTTP client keeps an idle connection for reuse. A server keeps an idle
kept-alive connection longer: a server that closed it first could do so just as the client
sent its next request on it, which the client sees as "Server disconnected" (a stopping
node's offline report was lost that way). The tracker keeps one at least :data:`IDLE_FLOOR`
seconds, whatever its ``header_timeout`` (:mod:`p2pshare.core.deadlines`); a node's peer
API keeps one ``header_timeout`` (20 s by default), so a node set to 15 s or less still races
with these clients (it logs a warning as it starts)."""
IDLE_FLOOR = CLIENT_KEEPALIVE + 5.0
"""Fewest seconds the tracker keeps an idle kept-alive connection, whatever ``header_timeout``
is: longer than its clients keep theirs (:data:`CLIENT_KEEPALIVE`). A node's peer API cannot
keep these apart (aiohttp's keep-alive timer is also its head timer) and keeps an idle
connection ``header_timeout``."""
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_HEADER_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What a server facing the network bounds for each client (see the module docstring)."""

    rate: float = DEFAULT_RATE
    """requests per second one source address may send, on average"""
    burst: int = DEFAULT_BURST
    """requests a source may send at once before ``rate`` applies"""
    max_sources: int = DEFAULT_MAX_SOURCES
    """source addresses remembered at once; the least recently seen is forgotten first"""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """connections served at once; a request on one more is answered 503"""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    """seconds a client has to send a whole request head (from connecting; on a kept-alive
    connection, from the request's first byte at the tracker, and from the end of the previous
    response at a node's peer API, which so keeps an idle connection that long too: see
    :data:`CLIENT_KEEPALIVE`); then the connection is closed"""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """seconds the server waits for each :data:`~p2pshare.core.deadlines.BODY_WINDOW` bytes of
    a request body (or its rest); then the request fails and the connection is closed"""
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    """bytes of the request line and headers the tracker reads (a node's peer API keeps
    aiohttp's own limits: 8190 bytes a line, 128 headers)"""

    @property
    def idle_timeout(self) -> float:
        """Seconds the tracker waits for the next request on a kept-alive connection:
        ``header_timeout``, but at least :data:`IDLE_FLOOR`."""
        return max(self.header_timeout, IDLE_FLOOR)

    def __post_init__(self) -> None:
        for name in ("rate", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigError(f"{name} must be a positive number of seconds or requests")
        for name in ("burst", "max_sources", "max_connections", "max_header_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


def retry_after(wait: float) -> int:
    """Return ``wait`` seconds as a ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


class SourceTable:
    """One token bucket per source, at most ``max_sources`` of them.

    A source not seen for a while is forgotten when the table is full (least recently seen
    first); coming back, it starts with a full burst again, as a new source would.
    """

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        TokenBucket(rate, burst, 0.0)  # refuse bad parameters now, not at the first request
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @classmethod
    def of(cls, limits: ServerLimits) -> SourceTable:
        """Return the table ``limits`` describe."""
        return cls(limits.rate, limits.burst, limits.max_sources)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, source: object) -> bool:
        return source in self._buckets

    def admit(self, source: str, now: float) -> float:
        """Count one request of ``source`` at ``now``.

        Returns 0.0 when it may be served, else the seconds until it may (the refused request
        costs nothing, so a source that waits that long is served).
        """
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            self._buckets[source] = bucket
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket.try_take(1, now)
