"""One transfer's live state: its moves (checked against :mod:`p2pshare.core.transfers`), its
byte counts, and a stream of progress events for any number of watchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from p2pshare.core.errors import P2PShareError
from p2pshare.core.node_messages import (
    TransferEvent,
    TransferInfo,
    TransferKind,
    TransferResult,
    TransferState,
)
from p2pshare.core.transfers import FINAL, can_move

EVENT_INTERVAL = 0.1
"""Least seconds between two progress events to one watcher (final events are never held)."""
KEEPALIVE = 5.0
"""Most seconds without an event: a quiet transfer repeats its state so watchers know it lives."""


class Transfer:
    """A running or finished transfer. Methods are called on the event loop only."""

    def __init__(self, transfer_id: str, kind: TransferKind, name: str) -> None:
        self.transfer_id = transfer_id
        self.kind: TransferKind = kind
        self.name = name
        self.state: TransferState = "planned"
        self.file_id: str | None = None
        self.done_bytes = 0
        self.total_bytes = 0
        self.message = ""
        self.error: P2PShareError | None = None
        self.result: TransferResult | None = None
        self.started_at = datetime.now(UTC)
        self.task: asyncio.Task[None] | None = None
        self._version = 0
        self._waiters: set[asyncio.Event] = set()

    def _bump(self) -> None:
        self._version += 1
        for waiter in self._waiters:
            waiter.set()

    def move(self, state: TransferState, message: str = "") -> None:
        """Go to ``state``; raise :class:`ValueError` for a move the state table forbids."""
        if not can_move(self.kind, self.state, state):
            raise ValueError(f"{self.kind} cannot go from {self.state} to {state}")
        self.state = state
        self.message = message
        self._bump()

    def set_total(self, total: int, done: int = 0) -> None:
        """Set the bytes this phase will move (and those already done)."""
        self.total_bytes = total
        self.done_bytes = done
        self._bump()

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more as done."""
        self.done_bytes += nbytes
        self._bump()

    def note(self, message: str) -> None:
        """Update the human message without moving."""
        self.message = message
        self._bump()

    def complete(self, result: TransferResult, message: str = "") -> None:
        """Finish successfully with ``result``."""
        self.result = result
        self.move("completed", message)

    def fail(self, error: P2PShareError) -> None:
        """Finish with ``error``."""
        self.error = error
        self.move("failed", error.detail)

    def cancelled(self) -> None:
        """Finish as cancelled (resumable)."""
        self.move("cancelled", "stopped; run the same command again to resume")

    @property
    def final(self) -> bool:
        """Return whether the transfer has ended."""
        return self.state in FINAL

    def snapshot(self) -> TransferEvent:
        """Return the current state as an event."""
        return TransferEvent(
            transfer_id=self.transfer_id,
            kind=self.kind,
            state=self.state,
            done_bytes=self.done_bytes,
            total_bytes=self.total_bytes,
            message=self.message,
            error=self.error.detail if self.error else None,
            error_code=self.error.code if self.error else None,
            result=self.result,
        )

    def info(self) -> TransferInfo:
        """Return the transfer as listed."""
        return TransferInfo(
            transfer_id=self.transfer_id,
            kind=self.kind,
            state=self.state,
            file_id=self.file_id,
            name=self.name,
            done_bytes=self.done_bytes,
            total_bytes=self.total_bytes,
            started_at=self.started_at,
        )

    async def events(self) -> AsyncIterator[TransferEvent]:
        """Yield the current state, then each change (at most every 0.1 s, at least every 5 s),
        until the final state."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            seen = -1
            while True:
                if self._version != seen:
                    seen = self._version
                    event = self.snapshot()
                    yield event
                    if event.state in FINAL:
                        return
                waiter.clear()
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        await waiter.wait()
                except TimeoutError:
                    seen = -1  # repeat the current state
                    continue
                if not self.final:
                    await asyncio.sleep(EVENT_INTERVAL)
        finally:
            self._waiters.discard(waiter)
