"""The in-memory liveness map with an injected clock: online, offline, write-behind batches."""

from __future__ import annotations

import pytest

from p2pshare.core.messages import NodeAnnounce
from p2pshare.tracker.clock import FakeClock
from p2pshare.tracker.liveness import FlushBatch, Liveness, flush_once, reserved_bytes
from tests.integration.tracker.support import nid

INTERVAL = 10.0
A, B = nid("a"), nid("b")


def ann(node_id: str, *, name: str = "n", free: int = 50, offered: int = 100) -> NodeAnnounce:
    return NodeAnnounce(
        node_id=node_id,
        name=name,
        address="http://127.0.0.1:7071",
        offered_bytes=offered,
        used_bytes=30,
        free_bytes=free,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> Liveness:
    return Liveness(INTERVAL, clock)


def test_online_until_three_intervals_of_silence(live: Liveness, clock: FakeClock) -> None:
    assert not live.is_online(A)
    live.record(ann(A))
    assert live.is_online(A)
    clock.advance(3 * INTERVAL)
    assert live.is_online(A)
    clock.advance(0.001)
    assert not live.is_online(A)
    assert [s.announce.node_id for s in live.online()] == []
    assert live.get(A) is not None  # still known, with its last numbers
    live.record(ann(A))
    assert live.is_online(A)


def test_row_write_needed_for_new_or_changed_identity(live: Liveness) -> None:
    a = ann(A)
    assert live.needs_row_write(a)
    live.row_written(a)
    assert not live.needs_row_write(a)
    assert not live.needs_row_write(ann(A, free=1))  # numbers change: written behind
    assert live.needs_row_write(ann(A, name="renamed"))
    assert live.needs_row_write(ann(A, offered=200))
    assert live.needs_row_write(a.model_copy(update={"address": "http://10.0.0.1:1"}))


def test_batches_carry_fresh_numbers_once(live: Liveness, clock: FakeClock) -> None:
    live.row_written(ann(A))
    live.record(ann(A, free=40))
    live.record(ann(A, free=20))
    batch = live.take_batch()
    assert batch.offline == []
    assert batch.seen == [
        {
            "node_id": A,
            "used_bytes": 30,
            "free_bytes": 20,
            "reserved_bytes": 50,
            "last_seen": clock.now(),
            "status": "online",
        }
    ]
    assert not live.take_batch()


def test_offline_is_reported_once(live: Liveness, clock: FakeClock) -> None:
    for n in (A, B):
        live.row_written(ann(n))
        live.record(ann(n))
    live.take_batch()
    clock.advance(2 * INTERVAL)
    live.record(ann(B))
    clock.advance(1.5 * INTERVAL)
    batch = live.take_batch()
    assert batch.offline == [A]
    assert [r["node_id"] for r in batch.seen] == [B]
    assert not live.take_batch()
    clock.advance(10 * INTERVAL)
    assert live.take_batch().offline == [B]


def test_requeue_puts_a_failed_batch_back(live: Liveness, clock: FakeClock) -> None:
    live.row_written(ann(A))
    live.record(ann(A))
    live.row_written(ann(B))
    clock.advance(4 * INTERVAL)
    live.record(ann(A))
    batch = live.take_batch()
    assert batch.offline == [B] and len(batch.seen) == 1
    live.requeue(batch)
    again = live.take_batch()
    assert again.offline == [B]
    assert [r["node_id"] for r in again.seen] == [A]


def test_reserved_bytes_never_negative() -> None:
    assert reserved_bytes(ann(A, free=50, offered=100)) == 20
    assert reserved_bytes(ann(A, free=90, offered=100)) == 0


def test_interval_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="> 0"):
        Liveness(0, clock)


class FailingStore:
    def __init__(self) -> None:
        self.batches: list[FlushBatch] = []
        self.fail = True

    async def write_liveness(self, batch: FlushBatch) -> None:
        from sqlalchemy.exc import OperationalError

        if self.fail:
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
        self.batches.append(batch)


async def test_flush_keeps_the_batch_when_the_write_fails(live: Liveness) -> None:
    store = FailingStore()
    live.row_written(ann(A))
    live.record(ann(A, free=7))
    assert await flush_once(live, store) is False
    store.fail = False
    assert await flush_once(live, store) is True
    assert [r["free_bytes"] for r in store.batches[0].seen] == [7]
    assert await flush_once(live, store) is True  # nothing pending: no write
    assert len(store.batches) == 1


def test_the_views_of_a_state_are_made_once_and_follow_each_announce(
    live: Liveness, clock: FakeClock
) -> None:
    first = live.record(ann(A, free=50))
    info, holder = first.info(online=True), first.holder(online=True)
    assert first.info(online=True) is info and first.holder(online=True) is holder
    assert (info.node_id, info.free_bytes, info.online, info.last_seen) == (
        A,
        50,
        True,
        clock.now(),
    )
    assert (holder.node_id, holder.address, holder.name, holder.online) == (
        A,
        "http://127.0.0.1:7071",
        "n",
        True,
    )
    offline = first.info(online=False)
    assert not offline.online and first.holder(online=False).online is False
    assert offline.model_dump(exclude={"online"}) == info.model_dump(exclude={"online"})
    clock.advance(1)
    second = live.record(ann(A, free=20, name="m"))
    assert second.info(online=True).free_bytes == 20
    assert second.info(online=True).last_seen == clock.now()
    assert second.holder(online=True).name == "m"
    assert first.info(online=True) is info  # an old state keeps its own views
