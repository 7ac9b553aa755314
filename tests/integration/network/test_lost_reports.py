"""A node's reports of lost chunks against a real tracker process: what the tracker takes,
refuses, or cannot hear (``node/heartbeat.py``'s ``LostReporter``)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pshare.core.messages import NodeAnnounce
from p2pshare.node.heartbeat import LostReporter
from p2pshare.node.http import new_session
from p2pshare.node.tracker_client import TrackerClient
from p2pshare.security.keys import KeyPair
from p2pshare.storage.filestore import FileChunkStore
from tests.integration.network.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

NO_TRACKER = "http://127.0.0.1:9"
"""Where no tracker answers: the discard port, on which nothing listens here."""


async def report(
    url: str,
    keys: KeyPair,
    ids: list[str],
    *,
    announce: bool,
    wait: float,
    store: FileChunkStore | None = None,
    taken: int = 0,
) -> LostReporter:
    """Run a reporter of ``ids`` for node ``keys`` (announced first or not; keeping what waits
    in ``store``, if given) until nothing waits and the tracker took ``taken`` chunks, or
    ``wait`` seconds have passed; return it, stopped the moment its counts say so (as a node
    stopping then would)."""
    async with new_session() as session:
        tracker = TrackerClient(session, url, signer=keys)
        if announce:
            await tracker.announce(
                NodeAnnounce(
                    node_id=keys.node_id,
                    name="reporter",
                    address="http://127.0.0.1:9",
                    offered_bytes=1 << 20,
                    used_bytes=0,
                    free_bytes=1 << 20,
                )
            )
        lost = LostReporter(tracker, keys.node_id, store)
        lost.record(ids)
        task = asyncio.create_task(lost.run())
        deadline = time.monotonic() + wait
        while (lost.waiting or lost.reported < taken) and time.monotonic() < deadline:
            await asyncio.sleep(0)  # every turn of the loop: sees the counts the moment they move
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return lost


def test_a_report_is_taken_refused_and_dropped_or_kept_while_the_tracker_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p2pshare.node.heartbeat")
    c = Cluster(tmp_path)
    try:
        url = c.start_tracker()
        known = KeyPair.of(Ed25519PrivateKey.generate())
        taken = asyncio.run(report(url, known, ["a" * 64, "b" * 64], announce=True, wait=10))
        assert (taken.waiting, taken.reported) == (0, 2)

        # a node the tracker never heard of: refused for what it says (400), not sent again
        stranger = KeyPair.of(Ed25519PrivateKey.generate())
        refused = asyncio.run(report(url, stranger, ["c" * 64], announce=False, wait=10))
        assert (refused.waiting, refused.reported) == (0, 0)
        assert "the tracker refused a report of lost chunks" in caplog.text
        assert "trying again" not in caplog.text

        # the tracker is down: the report waits (tried at 0, 1 and 3 s)
        c.kill("tracker")
        kept = asyncio.run(report(url, known, ["d" * 64], announce=False, wait=3.5))
        assert (kept.waiting, kept.reported) == (1, 0)
        assert "reporting 1 lost chunks failed" in caplog.text
    finally:
        c.close()


def test_a_report_a_stopped_node_left_waiting_is_sent_by_its_next_start(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        url = c.start_tracker()
        keys = KeyPair.of(Ed25519PrivateKey.generate())
        lost_id = "e" * 64

        async def scenario() -> None:
            # no tracker answers (nothing listens on the discard port): the report waits,
            # kept in the store, when the node stops
            async with await FileChunkStore.open(tmp_path / "store", quota=1 << 20) as store:
                left = await report(
                    NO_TRACKER, keys, [lost_id], announce=False, wait=1.5, store=store
                )
                assert (left.waiting, left.reported) == (1, 0)
            async with await FileChunkStore.open(tmp_path / "store", quota=1 << 20) as store:
                assert await store.lost_unreported() == [lost_id]
                again = await report(url, keys, [], announce=True, wait=10, store=store, taken=1)
                assert (again.waiting, again.reported) == (0, 1)
                assert await store.lost_unreported() == []  # taken: forgotten

        asyncio.run(scenario())
    finally:
        c.close()
