"""Rate limits on the node's traffic (``--max-upload-rate``, ``--max-download-rate``).

A :class:`RateLimiter` wraps :class:`p2pshare.core.ratelimit.TokenBucket` with the event
loop's clock: :meth:`RateLimiter.spend` waits until ``n`` more bytes may go. One limiter per
direction is shared by everything the node sends (chunks served, chunks pushed) or receives
(chunks fetched, chunks pushed to it). With no rate it costs nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeAlias

from p2pshare.core.ratelimit import TokenBucket

PIECE = 1 << 20
Piece: TypeAlias = bytes | bytearray | memoryview


class RateLimiter:
    """Bytes per second for one direction of traffic, or unlimited (``rate`` None)."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self._bucket = TokenBucket(rate, max(PIECE, rate / 4), time.monotonic()) if rate else None
        self._lock = threading.Lock()  # worker threads spend too (node/streams.py)

    def _take(self, n: int) -> float:
        assert self._bucket is not None
        with self._lock:
            return self._bucket.take(n, time.monotonic())

    async def spend(self, n: int) -> None:
        """Wait until ``n`` more bytes may be sent or received."""
        if self._bucket is None:
            return
        wait = self._take(n)
        if wait > 0:
            await asyncio.sleep(wait)

    def spend_blocking(self, n: int) -> None:
        """:meth:`spend` for a worker thread: sleeps the thread, not the event loop."""
        if self._bucket is None:
            return
        wait = self._take(n)
        if wait > 0:
            time.sleep(wait)

    async def paced(self, pieces: AsyncIterable[Piece]) -> AsyncIterator[Piece]:
        """Yield ``pieces``, each once the limit lets it through."""
        async for piece in pieces:
            await self.spend(len(piece))
            yield piece
