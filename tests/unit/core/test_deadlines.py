"""The read deadlines against slow senders, with plain times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.deadlines import BODY_WINDOW, BodyPace, Phase, ReadDeadline

HEAD, BODY = 2.0, 3.0


def test_a_head_is_due_header_timeout_after_the_connection_opens() -> None:
    d = ReadDeadline(HEAD, BODY, now=10)
    assert d.phase is Phase.HEAD
    assert d.due() == 12
    assert not d.expired(11.9)
    assert d.expired(12)


def test_a_dribbled_head_does_not_move_the_deadline() -> None:
    """Bytes of an incomplete head are not progress: only a complete head is."""
    d = ReadDeadline(HEAD, BODY, now=0)
    for t in range(1, 5):
        d.body(1, now=t)  # what a parser reports for head bytes: nothing in this phase
    assert d.expired(2)


def test_no_deadline_while_a_request_is_answered() -> None:
    d = ReadDeadline(HEAD, BODY, now=0)
    d.head_done(now=1)
    d.message_done(now=1)
    assert d.phase is Phase.HANDLING
    assert d.due() is None
    assert not d.expired(1e9)


def test_an_idle_connection_waits_header_timeout_for_its_next_request_by_default() -> None:
    d = ReadDeadline(HEAD, BODY, now=0)
    d.head_done(now=1)
    d.message_done(now=1)
    d.response_done(now=50)
    assert d.phase is Phase.IDLE
    assert d.due() == 52


IDLE = 20.0


def served_once(idle: float | None = IDLE) -> ReadDeadline:
    """A deadline whose connection was answered once, at 10."""
    d = ReadDeadline(HEAD, BODY, now=0, idle_timeout=idle)
    d.message_begin(now=0)  # the first request: its head is already due from the connection
    d.head_done(now=1)
    d.message_done(now=1)
    d.response_done(now=10)
    return d


def test_the_next_head_is_due_header_timeout_after_its_first_byte() -> None:
    """An idle kept-alive connection may wait ``idle_timeout`` for the next request (longer
    than its clients keep it), and that request's head is due ``header_timeout`` after it
    began: the slow-loris bound is the head's, whatever the idle time."""
    d = served_once()
    assert (d.phase, d.due()) == (Phase.IDLE, 30)
    assert not d.expired(29.9)
    d.message_begin(now=25)
    assert (d.phase, d.due()) == (Phase.HEAD, 27)
    d.body(1, now=26)  # head bytes are not progress
    assert d.expired(27)


def test_a_request_begun_while_the_one_before_is_answered_is_due_from_that_answer() -> None:
    d = ReadDeadline(HEAD, BODY, now=0, idle_timeout=IDLE)
    d.head_done(now=1)
    d.message_done(now=1)
    d.message_begin(now=2)  # pipelined: the next request's first bytes came already
    assert d.due() is None
    d.response_done(now=10)
    assert (d.phase, d.due()) == (Phase.HEAD, 12)
    d.head_done(now=11)
    d.message_done(now=11)
    d.response_done(now=12)
    assert (d.phase, d.due()) == (Phase.IDLE, 32)  # that was the only one waiting


def test_an_idle_timeout_is_never_shorter_than_the_header_timeout() -> None:
    assert served_once(idle=0.5).due() == 12
    assert served_once(idle=None).due() == 12
    assert ReadDeadline(HEAD, BODY, now=0).idle_timeout == HEAD


def test_a_first_request_is_due_header_timeout_after_connecting_not_idle_timeout() -> None:
    d = ReadDeadline(HEAD, BODY, now=0, idle_timeout=IDLE)
    assert (d.phase, d.due()) == (Phase.HEAD, 2)
    d.message_begin(now=1.5)  # its first byte does not restart the clock
    assert d.due() == 2


def test_a_body_must_bring_each_window_in_time() -> None:
    d = ReadDeadline(HEAD, BODY, now=0)
    d.head_done(now=0)
    assert d.due() == 3
    d.body(1000, now=2)  # some bytes, but not a window: the clock keeps running
    assert d.due() == 3
    d.body(BODY_WINDOW, now=2.5)  # the window is full: a fresh one starts
    assert d.due() == 5.5


def test_a_body_dribbling_a_byte_a_second_is_cut_off() -> None:
    d = ReadDeadline(HEAD, BODY, now=0)
    d.head_done(now=0)
    t = 0
    while not d.expired(t) and t < 100:
        d.body(1, now=t)
        t += 1
    assert t == BODY


def test_time_the_server_did_not_read_is_not_the_clients() -> None:
    d = ReadDeadline(HEAD, BODY, now=0)
    d.head_done(now=0)
    d.paused(now=10)
    assert d.due() == 13


def test_an_early_answer_waits_for_the_rest_of_the_body() -> None:
    """Answered before the body was read (413, 429): the rest must still keep the pace, and
    the connection waits for the next request once it is in."""
    d = ReadDeadline(HEAD, BODY, now=0, idle_timeout=IDLE)
    d.head_done(now=0)
    d.response_done(now=1)
    assert d.phase is Phase.BODY
    d.message_done(now=2)
    assert (d.phase, d.due()) == (Phase.IDLE, 22)


def test_bad_timeouts_are_refused() -> None:
    with pytest.raises(ValueError):
        ReadDeadline(0, 1, now=0)
    with pytest.raises(ValueError):
        BodyPace(0)


@given(st.lists(st.tuples(st.integers(0, 3 * BODY_WINDOW), st.floats(0, 10)), max_size=50))
def test_a_pace_never_allows_more_than_its_timeout(steps: list[tuple[int, float]]) -> None:
    pace = BodyPace(5.0)
    for nbytes, waited in steps:
        assert 0 <= pace.allowance() <= 5.0
        pace.record(nbytes, waited)


def test_a_full_window_restores_the_allowance() -> None:
    pace = BodyPace(5.0, window=100)
    pace.record(99, 4.0)
    assert pace.allowance() == pytest.approx(1.0)
    pace.record(1, 0.5)
    assert pace.allowance() == 5.0
