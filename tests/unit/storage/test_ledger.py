"""The quota ledger: its one rule holds under any sequence of operations (pure, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.errors import QuotaExceeded, ReservationError, ReservationExpired
from p2pshare.storage.ledger import Claim, Ledger
from tests.unit.storage.support import FakeClock

QUOTA = 1000

operation = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 400), st.floats(1, 50)),
    st.tuples(st.just("claim"), st.integers(1, 300), st.integers(-1, 5)),
    st.tuples(st.just("settle"), st.integers(0, 20)),
    st.tuples(st.just("refund"), st.integers(0, 20)),
    st.tuples(st.just("drop"), st.integers(0, 5)),
    st.tuples(st.just("tick"), st.floats(0, 30)),
    st.tuples(st.just("delete"), st.integers(0, 300)),
)


def _held(ledger: Ledger, clock: FakeClock) -> int:
    """Bytes the rule counts: used, in flight and the live reservations' unclaimed bytes."""
    live = sum(
        e.unclaimed()
        for e in ledger._entries.values()  # the rule is about internals; look at them
        if e.expires_at > clock.now
    )
    return ledger.used + ledger._in_flight + live


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_the_quota_is_never_passed(ops: list[tuple]) -> None:
    clock = FakeClock()
    ledger = Ledger(QUOTA, clock)
    reservations: list[str] = []
    open_claims: list[Claim] = []
    for op in ops:
        try:
            if op[0] == "reserve":
                reservations.append(ledger.reserve("u", op[1], op[2]).reservation_id)
            elif op[0] == "claim":
                rid = reservations[op[2]] if 0 <= op[2] < len(reservations) else None
                claim = Claim(rid)
                ledger.claim(claim, op[1])
                open_claims.append(claim)
            elif op[0] in ("settle", "refund") and open_claims:
                claim = open_claims.pop(op[1] % len(open_claims))
                (ledger.settle if op[0] == "settle" else ledger.refund)(claim)
            elif op[0] == "drop" and reservations:
                ledger.drop(reservations.pop(op[1] % len(reservations)))
            elif op[0] == "tick":
                clock.advance(op[1])
            elif op[0] == "delete":
                ledger.remove_used(min(op[1], ledger.used))
        except (QuotaExceeded, ReservationError):
            pass
        assert _held(ledger, clock) <= QUOTA
        assert ledger.free() == QUOTA - _held(ledger, clock)
        assert ledger.reserved() >= 0
    for claim in open_claims:
        ledger.refund(claim)
    assert ledger._in_flight == 0


def test_a_claim_under_a_reservation_does_not_change_the_free_space() -> None:
    clock = FakeClock()
    ledger = Ledger(QUOTA, clock)
    rid = ledger.reserve("u", 300, 10).reservation_id
    assert ledger.free() == 700
    claim = Claim(rid)
    ledger.claim(claim, 200)
    assert ledger.free() == 700
    assert ledger.settle(claim) is not None
    assert ledger.free() == 700
    assert ledger.used == 200
    assert ledger.reserved() == 100


def test_bytes_in_flight_under_a_lapsed_reservation_stay_counted() -> None:
    clock = FakeClock()
    ledger = Ledger(QUOTA, clock)
    rid = ledger.reserve("u", 300, 10).reservation_id
    claim = Claim(rid)
    ledger.claim(claim, 200)
    clock.advance(10)
    assert ledger.free() == 800  # the unclaimed 100 are free again, the 200 in flight are not
    with pytest.raises(ReservationExpired):
        ledger.claim(Claim(rid), 1)
    ledger.settle(claim)
    assert ledger.used == 200
    assert ledger.free() == 800
