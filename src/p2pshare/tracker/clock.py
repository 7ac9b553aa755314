"""Time, passed in: a monotonic clock for liveness and a UTC wall clock for records."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the tracker asks of time. Tests pass a fake that they move by hand."""

    def monotonic(self) -> float:
        """Return seconds from an arbitrary start; never goes backwards."""
        ...

    def now(self) -> datetime:
        """Return the current time, UTC, timezone-aware."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic` and :func:`datetime.now` in UTC."""

    def monotonic(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to (:meth:`advance`): for tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._mono = 1000.0
        self._wall = start or datetime(2030, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        """Return the fake monotonic time."""
        return self._mono

    def now(self) -> datetime:
        """Return the fake wall time."""
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)
