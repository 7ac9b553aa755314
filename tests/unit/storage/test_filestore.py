"""What only the file store promises: its layout, atomic writes, quota under load, persistence."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2pshare.core.errors import (
    IntegrityError,
    InvalidSize,
    QuotaExceeded,
    ReservationError,
    ReservationExpired,
    StoreLocked,
)
from p2pshare.storage.filestore import FileChunkStore
from tests.unit.storage.support import (
    FakeClock,
    KiB,
    chunk_files,
    files_under,
    make_chunk,
    stream,
    temp_files,
    total_size,
)


async def test_a_chunk_lives_under_its_fan_out_directory(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        cid, data = make_chunk(1)
        await store.put(cid, data)
        expected = tmp_path / "chunks" / cid[:2] / cid
        assert store.path(cid) == expected
        assert await asyncio.to_thread(chunk_files, tmp_path) == [expected]
        assert await asyncio.to_thread(expected.read_bytes) == data


async def test_bad_bytes_leave_no_file_not_even_a_temp_file(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        cid, data = make_chunk(2, 8 * KiB)
        corrupt = data[:-1] + bytes([data[-1] ^ 0xFF])
        with pytest.raises(IntegrityError):
            await store.put(cid, corrupt)
        with pytest.raises(IntegrityError):
            await store.put(cid, stream(corrupt, piece=KiB))
        assert await asyncio.to_thread(chunk_files, tmp_path) == []
        assert store.free_bytes == 64 * KiB


async def test_a_cancelled_put_leaves_no_file_and_no_claim(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        cid, data = make_chunk(3, 8 * KiB)
        task = asyncio.create_task(store.put(cid, stream(data, piece=KiB, delay=0.01)))
        while not await asyncio.to_thread(temp_files, tmp_path):
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(chunk_files, tmp_path) == []
        assert store.free_bytes == 64 * KiB
        assert not await store.has(cid)


async def test_fifty_concurrent_puts_never_pass_the_quota(tmp_path: Path) -> None:
    size = 4 * KiB
    async with await FileChunkStore.open(tmp_path, quota=10 * size) as store:
        chunks = [make_chunk(seed, size) for seed in range(50)]
        results = await asyncio.gather(
            *(store.put(cid, data) for cid, data in chunks), return_exceptions=True
        )
        stored = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, QuotaExceeded) for r in refused)
        assert len(stored) == 10
        assert store.used_bytes == 10 * size
        files = await asyncio.to_thread(chunk_files, tmp_path)
        assert len(files) == 10
        assert await asyncio.to_thread(total_size, files) == 10 * size


async def test_fifty_concurrent_streaming_puts_never_pass_the_quota(tmp_path: Path) -> None:
    size = 4 * KiB
    quota = 10 * size + 3 * KiB
    peak = 0

    async with await FileChunkStore.open(tmp_path, quota=quota) as store:

        async def watched(data: bytes):
            nonlocal peak
            async for piece in stream(data, piece=KiB):
                peak = max(peak, quota - store.free_bytes)
                yield piece

        chunks = [make_chunk(seed, size) for seed in range(50)]
        results = await asyncio.gather(
            *(store.put(cid, watched(data)) for cid, data in chunks), return_exceptions=True
        )
        stored = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, QuotaExceeded) for r in refused)
        assert stored, "some puts must succeed"
        assert store.used_bytes == len(stored) * size <= quota
        assert peak <= quota
        assert len(await asyncio.to_thread(chunk_files, tmp_path)) == len(stored)
        assert store.free_bytes == quota - len(stored) * size


async def test_used_bytes_are_counted_again_on_reopen(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        for seed in range(3):
            cid, data = make_chunk(seed, 2 * KiB)
            await store.put(cid, data)
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        assert store.used_bytes == 6 * KiB
        assert len(await store.list()) == 3


async def test_reservations_survive_a_restart_and_then_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB, clock=clock) as store:
        reservation = await store.reserve("upload-7", 20 * KiB, ttl=100)
        rid = reservation.reservation_id
        cid, data = make_chunk(4)
        await store.put(cid, data, reservation_id=rid)
        released = await store.reserve("upload-8", 1 * KiB, ttl=100)
        await store.release(released.reservation_id)

    clock.advance(50)
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB, clock=clock) as store:
        again = await store.get_reservation(rid)
        assert again.upload_id == "upload-7"
        assert again.nbytes == 20 * KiB
        assert again.used == len(data)
        assert again.expires_at == reservation.expires_at
        assert store.reserved_bytes == 20 * KiB - len(data)
        assert store.free_bytes == 64 * KiB - 20 * KiB
        with pytest.raises(ReservationError):
            await store.get_reservation(released.reservation_id)

        clock.advance(50)
        assert store.free_bytes == 64 * KiB - len(data)
        other, other_data = make_chunk(5)
        with pytest.raises(ReservationExpired):
            await store.put(other, other_data, reservation_id=rid)

    async with await FileChunkStore.open(tmp_path, quota=64 * KiB, clock=clock) as store:
        # the reopen dropped it for good
        with pytest.raises(ReservationError) as excinfo:
            await store.get_reservation(rid)
        assert not isinstance(excinfo.value, ReservationExpired)
        assert await store.expire() == 0


async def test_scan_quarantines_a_chunk_corrupted_on_disk(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_123.5)
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB, clock=clock) as store:
        good, good_data = make_chunk(6)
        bad, bad_data = make_chunk(7)
        await store.put(good, good_data)
        await store.put(bad, bad_data)
        flipped = bytes([bad_data[100] ^ 0x01])
        await asyncio.to_thread(_overwrite, store.path(bad), 100, flipped)

        report = await store.scan()

        assert report.checked == 2
        assert report.quarantined == (bad,)
        assert await store.list() == [good]
        assert not await store.has(bad)
        assert store.used_bytes == len(good_data)
        moved = await asyncio.to_thread(files_under, tmp_path / "quarantine")
        assert [p.name for p in moved] == [f"{bad}.1700000123500"]
        assert (await store.scan()).quarantined == ()


async def test_lost_chunks_not_reported_yet_survive_a_restart_unless_held_again(
    tmp_path: Path,
) -> None:
    # node.heartbeat.LostReporter keeps here what the tracker has not taken yet
    (a, _), (b, b_data), (c, _) = (make_chunk(seed) for seed in (8, 9, 10))
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        assert await store.lost_unreported() == []
        await store.lost_kept([a, b])
        await store.lost_kept([c, a])  # kept twice: once
        await store.lost_reported([c, "f" * 64])  # taken; an id never kept changes nothing
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        assert await store.lost_unreported() == sorted([a, b])
        await store.put(b, b_data)  # a repair brought it back: not lost any more
        assert await store.lost_unreported() == [a]
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        await store.delete(b)
        assert await store.lost_unreported() == [a]  # b was forgotten, not only hidden


async def test_a_lost_chunk_record_that_cannot_be_used_is_logged_and_nothing_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the record helps a restart; the report itself goes on without it
    cid, _ = make_chunk(11)
    store = await FileChunkStore.open(tmp_path, quota=64 * KiB)
    try:
        store._db.close()  # the database is gone from under the store
        await store.lost_kept([cid])
        await store.lost_reported([cid])
        assert await store.lost_unreported() == []
    finally:
        await store.close()
    assert "could not record 1 lost chunks as waiting or reported" in caplog.text
    assert "could not read the lost chunks not yet reported" in caplog.text


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


async def test_an_orphaned_temp_file_is_removed_on_open(tmp_path: Path) -> None:
    cid, data = make_chunk(8)
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB):
        pass
    orphan = tmp_path / "chunks" / cid[:2] / f".{cid}.0123abcd.tmp"
    await asyncio.to_thread(_write_file, orphan, data[:1000])
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        assert not await asyncio.to_thread(orphan.exists)
        assert await store.list() == []
        assert store.used_bytes == 0


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def test_an_exclusive_store_keeps_others_out(tmp_path: Path) -> None:
    store = await FileChunkStore.open(tmp_path, quota=KiB, exclusive=True)
    with pytest.raises(StoreLocked):
        await FileChunkStore.open(tmp_path, quota=KiB, exclusive=True)
    await store.close()
    again = await FileChunkStore.open(tmp_path, quota=KiB, exclusive=True)
    await again.close()


@pytest.mark.parametrize("quota", [-1, 1.5, True])
async def test_a_bad_quota_is_refused(tmp_path: Path, quota: object) -> None:
    with pytest.raises(InvalidSize):
        await FileChunkStore.open(tmp_path, quota=quota)  # type: ignore[arg-type]


async def test_verified_and_cache_puts_store_the_same_bytes(tmp_path: Path) -> None:
    """A caller that just hashed the bytes skips the store's hash; a cache copy skips the
    flush. Both store the chunk like any other; only whole bytes may be put as verified."""
    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        cid, data = make_chunk(5, 8 * KiB)
        result = await store.put(cid, memoryview(data), verified=True, durable=False)
        assert result.created and result.size == len(data)
        assert await asyncio.to_thread(store.path(cid).read_bytes) == data
        assert await store.read(cid) == data
        assert await asyncio.to_thread(temp_files, tmp_path) == []
        other, more = make_chunk(6, 4 * KiB)
        with pytest.raises(TypeError, match="whole-chunk bytes"):
            await store.put(other, stream(more, piece=KiB), verified=True)
        assert not await store.has(other)
        assert store.used_bytes == len(data)
