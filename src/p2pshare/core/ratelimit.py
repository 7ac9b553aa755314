"""A token bucket (pure: the caller passes the time and does the waiting).

``rate`` bytes per second refill the bucket up to ``burst`` bytes. :meth:`TokenBucket.take`
spends ``n`` bytes now and returns how long the caller must wait before sending them, so
concurrent takers queue up fairly in the order they asked: the bucket may go negative (a debt
later takers wait out), which is what keeps the long-run rate at ``rate`` for any mix of piece
sizes, including pieces larger than ``burst``.

:meth:`TokenBucket.try_take` is the refusing kind, for admission (requests per second): it
spends only when the tokens are there, so a refused caller runs up no debt.
"""

from __future__ import annotations


class TokenBucket:
    """Bytes per second with a burst allowance; times are monotonic seconds."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, n: int, now: float) -> float:
        """Spend ``n`` bytes at ``now``; return the seconds to wait before using them (>= 0)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_take(self, n: float, now: float) -> float:
        """Spend ``n`` at ``now`` only if the bucket holds them; return 0.0 when spent, else
        the seconds until it will (nothing is spent then)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate
