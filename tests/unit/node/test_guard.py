"""The node's guard settings, with plain values (its behaviour against hostile clients is in
tests/integration/network/test_hostile_input.py)."""

from __future__ import annotations

import logging

import pytest

from p2pshare.core.admission import ServerLimits
from p2pshare.node.guard import PeerGuard


@pytest.mark.parametrize(("seconds", "warned"), [(2.0, True), (15.0, True), (15.5, False)])
def test_a_header_timeout_no_longer_than_the_nodes_keep_alive_is_warned_of(
    seconds: float, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp's keep-alive timer is also the head timer: an idle connection is closed after
    # header_timeout, and the other nodes keep theirs 15 s
    with caplog.at_level(logging.WARNING, logger="p2pshare.node.guard"):
        options = PeerGuard(ServerLimits(header_timeout=seconds)).runner_options()
    assert options["keepalive_timeout"] == seconds
    assert ("their requests now and then fail once" in caplog.text) is warned
