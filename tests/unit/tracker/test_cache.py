"""The file-detail cache: hits, invalidation, reads racing writes, TTL and its bounds."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from p2pshare.core.manifest import ManifestBuilder
from p2pshare.tracker.cache import DetailCache, FileSnapshot
from p2pshare.tracker.clock import FakeClock


def snapshot(chunks: int = 1, held: int = 0, tag: int = 0) -> FileSnapshot:
    b = ManifestBuilder(chunk_size=64 * 1024)
    for i in range(chunks):
        b.add_chunk(bytes([tag % 256, i % 256]) * (32 * 1024 if i < chunks - 1 else 10))
    return FileSnapshot(
        manifest=b.finish(f"f{tag}", datetime(2026, 1, 1, tzinfo=UTC)),
        owner="owner",
        replica_target=2,
        created=datetime(2026, 1, 1, tzinfo=UTC),
        downloads=tag,
        held=tuple(("c", i) for i in range(held)),
        leeching=(),
    )


class Loader:
    """Counts its calls; returns a new snapshot each time (downloads = call number)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> FileSnapshot:
        self.calls += 1
        return snapshot(tag=self.calls)


async def test_second_read_is_a_hit_and_invalidate_forces_a_reload() -> None:
    cache, load = DetailCache(FakeClock()), Loader()
    assert (await cache.get("a", load)).downloads == 1
    assert (await cache.get("a", load)).downloads == 1
    assert (cache.hits, cache.misses, load.calls) == (1, 1, 1)
    cache.invalidate(["b"])  # another file: no effect
    assert (await cache.get("a", load)).downloads == 1
    cache.invalidate(["a"])
    assert (await cache.get("a", load)).downloads == 2
    assert load.calls == 2


async def test_a_read_in_flight_during_a_write_is_answered_but_not_stored() -> None:
    cache = DetailCache(FakeClock())
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> FileSnapshot:
        started.set()
        await release.wait()
        return snapshot(tag=7)

    reader = asyncio.create_task(cache.get("a", slow))
    await started.wait()
    cache.invalidate(["a"])  # a write committed while the read was running
    release.set()
    assert (await reader).downloads == 7
    assert len(cache) == 0
    load = Loader()
    assert (await cache.get("a", load)).downloads == 1
    assert load.calls == 1


async def test_a_failing_load_caches_nothing() -> None:
    cache = DetailCache(FakeClock())

    async def boom() -> FileSnapshot:
        raise LookupError("gone")

    with pytest.raises(LookupError):
        await cache.get("a", boom)
    assert len(cache) == 0


async def test_ttl_expires_entries_when_set() -> None:
    clock = FakeClock()
    cache, load = DetailCache(clock, ttl=5.0), Loader()
    await cache.get("a", load)
    clock.advance(4.9)
    await cache.get("a", load)
    assert load.calls == 1
    clock.advance(0.2)
    assert (await cache.get("a", load)).downloads == 2


async def test_bounded_in_entries_least_recently_used_goes_first() -> None:
    cache = DetailCache(FakeClock(), max_entries=2)
    loads = {k: Loader() for k in "abc"}
    await cache.get("a", loads["a"])
    await cache.get("b", loads["b"])
    await cache.get("a", loads["a"])  # a is now the most recent
    await cache.get("c", loads["c"])  # evicts b
    assert len(cache) == 2
    await cache.get("a", loads["a"])
    await cache.get("b", loads["b"])
    assert (loads["a"].calls, loads["b"].calls) == (1, 2)


async def test_bounded_in_weight_and_oversized_snapshots_are_not_kept() -> None:
    cache = DetailCache(FakeClock(), max_weight=10)

    async def big() -> FileSnapshot:
        return snapshot(chunks=2, held=20)

    await cache.get("big", big)
    assert len(cache) == 0
    for key in "abcd":

        async def small() -> FileSnapshot:
            return snapshot(chunks=1, held=2)  # weight 3

        await cache.get(key, small)
    assert len(cache) == 3  # 4 x 3 > 10: the oldest went


def test_the_layout_arranges_the_rows_by_chunk_and_by_node() -> None:
    snap = snapshot(chunks=3)
    c0, c1, c2 = snap.manifest.chunk_ids
    row = SimpleNamespace
    held = (
        row(chunk_id=c1, node_id="x", n=1),
        row(chunk_id=c0, node_id="y", n=2),
        row(chunk_id=c0, node_id="x", n=3),
        row(chunk_id=c2, node_id="x", n=4),
        row(chunk_id=c2, node_id="z", n=5),
    )
    layout = replace(snap, held=held).layout
    assert layout.holders == {c0: ("y", "x"), c1: ("x",), c2: ("x", "z")}
    assert {n: r.n for n, r in layout.rows.items()} == {"x": 1, "y": 2, "z": 5}
    assert list(layout.rows) == ["x", "y", "z"]
    assert layout.complete == ("x",)


def test_the_layout_counts_a_repeated_chunk_once_and_lists_chunks_nobody_holds() -> None:
    snap = snapshot(chunks=3)
    c0, c1, _ = snap.manifest.chunk_ids
    twice = snap.manifest.model_copy(update={"chunk_ids": [c0, c1, c0]})
    held = (SimpleNamespace(chunk_id=c0, node_id="x"), SimpleNamespace(chunk_id=c1, node_id="x"))
    layout = replace(snap, manifest=twice, held=held).layout
    assert layout.complete == ("x",)
    alone = replace(snap, held=held[:1]).layout
    assert alone.holders[c1] == () and alone.complete == ()
    nobody = replace(snap, held=()).layout
    assert nobody.complete == () and nobody.rows == {}


def test_the_layout_is_made_once_per_snapshot() -> None:
    snap = snapshot(chunks=2)
    assert snap.layout is snap.layout
