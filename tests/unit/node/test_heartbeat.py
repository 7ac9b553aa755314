"""The pure part of node/heartbeat.py: how long a background report waits after failures."""

from __future__ import annotations

from p2pshare.node.heartbeat import MAX_RETRY_DELAY, retry_delay


def test_the_wait_doubles_up_to_its_bound() -> None:
    waits = [retry_delay(n, MAX_RETRY_DELAY) for n in range(1, 9)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert retry_delay(3, 2.5) == 2.5  # a heartbeat waits no longer than its interval
    assert retry_delay(10_000, 1e9) == 32.0  # the exponent is bounded too
