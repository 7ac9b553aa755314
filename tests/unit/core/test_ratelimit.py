"""The token bucket, with plain numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.ratelimit import TokenBucket


def test_the_burst_is_free_then_bytes_wait_at_the_rate() -> None:
    b = TokenBucket(rate=100, burst=50, now=0)
    assert b.take(50, now=0) == 0
    assert b.take(100, now=0) == pytest.approx(1.0)
    assert b.take(100, now=0) == pytest.approx(2.0)  # queued behind the first debt


def test_idle_time_refills_but_never_above_the_burst() -> None:
    b = TokenBucket(rate=100, burst=50, now=0)
    b.take(50, now=0)
    assert b.take(30, now=0.3) == 0
    assert b.take(100, now=100) == pytest.approx(0.5)


def test_try_take_spends_only_what_is_there() -> None:
    b = TokenBucket(rate=10, burst=2, now=0)
    assert b.try_take(1, now=0) == 0
    assert b.try_take(1, now=0) == 0
    assert b.try_take(1, now=0) == pytest.approx(0.1)
    assert b.try_take(1, now=0) == pytest.approx(0.1)  # the refusal ran up no debt
    assert b.try_take(1, now=0.1) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="> 0"):
        TokenBucket(rate=0, burst=1, now=0)


@given(
    rate=st.integers(1, 10_000),
    burst=st.integers(1, 10_000),
    pieces=st.lists(st.integers(1, 50_000), min_size=1, max_size=40),
)
def test_the_long_run_rate_is_never_above_rate(rate: int, burst: int, pieces: list[int]) -> None:
    """Send each piece once its wait is over: the total time is at least (bytes - burst) / rate."""
    b = TokenBucket(rate=rate, burst=burst, now=0)
    now = 0.0
    for n in pieces:
        now += b.take(n, now)
    assert now >= (sum(pieces) - burst) / rate - 1e-6
