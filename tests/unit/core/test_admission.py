"""Per-source admission and server limits, with plain values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.admission import ServerLimits, SourceTable, retry_after
from p2pshare.core.errors import ConfigError


def test_a_source_gets_its_burst_then_waits_at_the_rate() -> None:
    table = SourceTable(rate=10, burst=3, max_sources=8)
    assert [table.admit("a", now=0) for _ in range(3)] == [0, 0, 0]
    assert table.admit("a", now=0) == pytest.approx(0.1)
    assert table.admit("a", now=0.1) == 0  # one token back after 1 / rate


def test_a_refused_request_costs_nothing() -> None:
    """Hammering while refused does not push the source further back."""
    table = SourceTable(rate=10, burst=1, max_sources=8)
    assert table.admit("a", now=0) == 0
    for _ in range(100):
        assert table.admit("a", now=0.05) == pytest.approx(0.05)
    assert table.admit("a", now=0.1) == 0


def test_sources_are_counted_apart() -> None:
    table = SourceTable(rate=1, burst=1, max_sources=8)
    assert table.admit("a", now=0) == 0
    assert table.admit("a", now=0) > 0
    assert table.admit("b", now=0) == 0


def test_the_table_forgets_the_least_recently_seen_source() -> None:
    table = SourceTable(rate=1, burst=1, max_sources=2)
    table.admit("a", now=0)
    table.admit("b", now=1)
    table.admit("a", now=2)  # a is now more recent than b
    table.admit("c", now=3)
    assert len(table) == 2
    assert "a" in table and "c" in table and "b" not in table


@given(st.lists(st.sampled_from("abcdefghij"), max_size=200), st.integers(1, 5))
def test_the_table_never_holds_more_than_max_sources(sources: list[str], cap: int) -> None:
    table = SourceTable(rate=5, burst=2, max_sources=cap)
    for i, source in enumerate(sources):
        table.admit(source, now=i * 0.01)
        assert len(table) <= cap


@given(st.lists(st.floats(0, 0.5), min_size=1, max_size=300))
def test_admitted_requests_never_exceed_burst_plus_rate_times_time(gaps: list[float]) -> None:
    rate, burst = 20.0, 5
    table = SourceTable(rate=rate, burst=burst, max_sources=4)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        admitted += table.admit("x", now) == 0
        assert admitted <= burst + rate * now + 1e-9


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after(0.001) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.2) == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"rate": 0},
        {"burst": 0},
        {"max_sources": 0},
        {"max_connections": -1},
        {"header_timeout": 0},
        {"body_timeout": float("inf")},
        {"max_header_size": True},
    ],
)
def test_bad_limits_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ServerLimits(**bad)  # type: ignore[arg-type]


def test_the_defaults_are_generous() -> None:
    limits = ServerLimits()
    assert limits.rate >= 1000 and limits.burst >= 1000
    assert 10 <= limits.header_timeout <= 30
