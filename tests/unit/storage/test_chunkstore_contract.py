"""The chunk store contract, run against both implementations (files in tmp_path, memory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from p2pshare.core.errors import (
    IntegrityError,
    InvalidId,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    ReservationError,
    ReservationExpired,
)
from p2pshare.storage.chunkstore import READ_PIECE, ChunkReader, ChunkStore, PutResult
from p2pshare.storage.filestore import FileChunkStore
from p2pshare.storage.memorystore import MemoryChunkStore
from tests.unit.storage.support import FakeClock, KiB, make_chunk, stream

QUOTA = 64 * KiB
OpenStore = Callable[..., Awaitable[ChunkStore]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["file", "memory"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[OpenStore]:
    """Return a factory of stores of the parametrised kind; closes them all afterwards."""
    opened: list[ChunkStore] = []

    async def factory(quota: int = QUOTA, max_chunk_size: int = 16 * KiB) -> ChunkStore:
        store: ChunkStore
        if request.param == "file":
            store = await FileChunkStore.open(
                tmp_path / "data", quota=quota, clock=clock, max_chunk_size=max_chunk_size
            )
        else:
            store = await MemoryChunkStore.open(
                quota=quota, clock=clock, max_chunk_size=max_chunk_size
            )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> ChunkStore:
    return await open_store()


# -- put, get, has, size, list, delete ------------------------------------------------------


async def test_put_then_read_back(store: ChunkStore) -> None:
    cid, data = make_chunk(1)
    result = await store.put(cid, data)
    assert result == PutResult(cid, len(data), created=True)
    assert await store.has(cid)
    assert await store.read(cid) == data
    assert await store.size(cid) == len(data)
    assert await store.list() == [cid]
    assert store.used_bytes == len(data)
    assert store.free_bytes == QUOTA - len(data)


async def test_put_from_a_stream(store: ChunkStore) -> None:
    cid, data = make_chunk(2, 10 * KiB + 7)
    result = await store.put(cid, stream(data, piece=3 * KiB))
    assert result.created
    assert result.size == len(data)
    assert await store.read(cid) == data


async def test_get_streams_in_pieces_with_the_size_known_first(open_store: OpenStore) -> None:
    store = await open_store(quota=4 * READ_PIECE, max_chunk_size=3 * READ_PIECE)
    cid, data = make_chunk(3, 2 * READ_PIECE + 5)
    await store.put(cid, stream(data, piece=256 * KiB))
    reader = await store.get(cid)
    assert reader.size == len(data)
    pieces = [piece async for piece in reader]
    assert [len(p) for p in pieces] == [READ_PIECE, READ_PIECE, 5]
    assert b"".join(pieces) == data


def read_all(reader: ChunkReader, piece: int) -> bytes:
    """Blocking: read ``reader`` to its end by ``read_into``, ``piece`` bytes at a time."""
    buf = bytearray(piece)
    got = bytearray()
    while n := reader.read_into(memoryview(buf)):
        got += buf[:n]
    return bytes(got)


async def test_a_reader_rewinds_to_read_its_chunk_again(store: ChunkStore) -> None:
    """A push sent again on a fresh connection reads its chunk from the start (streams.py)."""
    cid, data = make_chunk(5, 10 * KiB + 3)
    await store.put(cid, data)
    async with await store.get(cid) as reader:
        first = await asyncio.to_thread(read_all, reader, 4 * KiB)
        assert await asyncio.to_thread(reader.rewind)
        again = await asyncio.to_thread(read_all, reader, 3 * KiB)
    assert first == again == data


async def test_a_reader_closed_early_yields_nothing_more(store: ChunkStore) -> None:
    cid, data = make_chunk(4)
    await store.put(cid, data)
    async with await store.get(cid) as reader:
        pass
    assert [piece async for piece in reader] == []


async def test_list_is_sorted(store: ChunkStore) -> None:
    ids = []
    for seed in range(5):
        cid, data = make_chunk(seed, 1 * KiB)
        await store.put(cid, data)
        ids.append(cid)
    assert await store.list() == sorted(ids)


async def test_delete_frees_the_bytes(store: ChunkStore) -> None:
    cid, data = make_chunk(5)
    other, other_data = make_chunk(6)
    await store.put(cid, data)
    await store.put(other, other_data)
    await store.delete(cid)
    assert not await store.has(cid)
    assert await store.list() == [other]
    assert store.used_bytes == len(other_data)
    assert store.free_bytes == QUOTA - len(other_data)


async def test_absent_chunks_are_not_found(store: ChunkStore) -> None:
    cid, _ = make_chunk(7)
    assert not await store.has(cid)
    with pytest.raises(NotFound):
        await store.get(cid)
    with pytest.raises(NotFound):
        await store.read(cid)
    with pytest.raises(NotFound):
        await store.size(cid)
    with pytest.raises(NotFound):
        await store.delete(cid)


@pytest.mark.parametrize(
    "bad_id",
    ["", "abc", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 63 + "/", "a" * 65, None, 42],
)
async def test_malformed_ids_are_refused(store: ChunkStore, bad_id: object) -> None:
    _, data = make_chunk(8)
    with pytest.raises(InvalidId):
        await store.put(bad_id, data)  # type: ignore[arg-type]
    for method in (store.get, store.has, store.size, store.delete):
        with pytest.raises(InvalidId):
            await method(bad_id)  # type: ignore[operator]
    assert await store.list() == []
    assert store.used_bytes == 0


# -- verification and limits ----------------------------------------------------------------


async def test_bytes_that_do_not_match_the_id_are_refused(store: ChunkStore) -> None:
    cid, data = make_chunk(9)
    corrupt = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(IntegrityError):
        await store.put(cid, corrupt)
    with pytest.raises(IntegrityError):
        await store.put(cid, stream(corrupt))
    assert not await store.has(cid)
    assert await store.list() == []
    assert store.used_bytes == 0
    assert store.free_bytes == QUOTA


async def test_a_chunk_over_the_size_limit_is_refused(open_store: OpenStore) -> None:
    store = await open_store(max_chunk_size=4 * KiB)
    cid, data = make_chunk(10, 4 * KiB + 1)
    with pytest.raises(InvalidInput):
        await store.put(cid, data)
    assert await store.list() == []
    assert store.free_bytes == QUOTA


async def test_an_endless_stream_is_cut_off_at_the_size_limit(open_store: OpenStore) -> None:
    store = await open_store(max_chunk_size=4 * KiB)
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * KiB

    cid, _ = make_chunk(11)
    with pytest.raises(InvalidInput):
        await store.put(cid, endless())
    assert pulled == 5  # four pieces fit, the fifth is refused and nothing more is read
    assert await store.list() == []
    assert store.free_bytes == QUOTA


async def test_a_put_that_does_not_fit_is_refused_and_changes_nothing(
    open_store: OpenStore,
) -> None:
    store = await open_store(quota=6 * KiB)
    first, first_data = make_chunk(12)
    second, second_data = make_chunk(13)
    await store.put(first, first_data)
    with pytest.raises(QuotaExceeded):
        await store.put(second, second_data)
    with pytest.raises(QuotaExceeded):
        await store.put(second, stream(second_data))
    assert await store.list() == [first]
    assert store.used_bytes == 4 * KiB
    assert store.free_bytes == 2 * KiB


async def test_a_put_may_fill_the_quota_exactly(open_store: OpenStore) -> None:
    store = await open_store(quota=4 * KiB)
    cid, data = make_chunk(14)
    await store.put(cid, data)
    assert store.free_bytes == 0


# -- duplicates -----------------------------------------------------------------------------


async def test_a_second_put_of_a_chunk_is_a_no_op(store: ChunkStore) -> None:
    cid, data = make_chunk(15)
    await store.put(cid, data)
    again = await store.put(cid, stream(data))
    assert again == PutResult(cid, len(data), created=False)
    assert store.used_bytes == len(data)


async def test_concurrent_puts_of_one_chunk_store_it_once(store: ChunkStore) -> None:
    cid, data = make_chunk(16)
    results = await asyncio.gather(*(store.put(cid, stream(data, delay=0.001)) for _ in range(10)))
    assert sorted(r.created for r in results) == [False] * 9 + [True]
    assert store.used_bytes == len(data)
    assert await store.read(cid) == data


# -- reservations ---------------------------------------------------------------------------


async def test_a_reservation_holds_space_for_its_upload(store: ChunkStore) -> None:
    reservation = await store.reserve("upload-1", 40 * KiB, ttl=60)
    assert reservation.nbytes == 40 * KiB
    assert reservation.used == 0
    assert len(reservation.reservation_id) == 32
    assert store.reserved_bytes == 40 * KiB
    assert store.free_bytes == QUOTA - 40 * KiB
    assert await store.get_reservation(reservation.reservation_id) == reservation


async def test_puts_under_a_reservation_draw_from_it(store: ChunkStore) -> None:
    reservation = await store.reserve("upload-1", 10 * KiB, ttl=60)
    rid = reservation.reservation_id
    cid, data = make_chunk(17)
    await store.put(cid, data, reservation_id=rid)
    after = await store.get_reservation(rid)
    assert after.used == len(data)
    assert after.remaining == 10 * KiB - len(data)
    assert store.used_bytes == len(data)
    assert store.reserved_bytes == 10 * KiB - len(data)
    assert store.free_bytes == QUOTA - 10 * KiB  # unchanged by the put
    # a duplicate under the reservation consumes nothing
    await store.put(cid, data, reservation_id=rid)
    assert (await store.get_reservation(rid)).used == len(data)


async def test_a_reservation_that_is_too_small_refuses_the_put(store: ChunkStore) -> None:
    reservation = await store.reserve("upload-1", 3 * KiB, ttl=60)
    cid, data = make_chunk(18)
    with pytest.raises(ReservationError):
        await store.put(cid, stream(data), reservation_id=reservation.reservation_id)
    assert await store.list() == []
    assert (await store.get_reservation(reservation.reservation_id)).used == 0
    assert store.free_bytes == QUOTA - 3 * KiB


async def test_an_unknown_reservation_is_refused(store: ChunkStore) -> None:
    cid, data = make_chunk(19)
    with pytest.raises(ReservationError):
        await store.put(cid, data, reservation_id="0" * 32)
    with pytest.raises(ReservationError):
        await store.get_reservation("0" * 32)
    with pytest.raises(ReservationError):
        await store.release("0" * 32)
    assert await store.list() == []


async def test_reserved_space_is_not_free_space(store: ChunkStore) -> None:
    await store.reserve("upload-1", QUOTA - 2 * KiB, ttl=60)
    cid, data = make_chunk(20)
    with pytest.raises(QuotaExceeded):
        await store.put(cid, data)
    with pytest.raises(QuotaExceeded):
        await store.reserve("upload-2", 4 * KiB, ttl=60)
    assert await store.list() == []


async def test_release_frees_the_unused_part(store: ChunkStore) -> None:
    reservation = await store.reserve("upload-1", 20 * KiB, ttl=60)
    rid = reservation.reservation_id
    cid, data = make_chunk(21)
    await store.put(cid, data, reservation_id=rid)
    await store.release(rid)
    assert store.reserved_bytes == 0
    assert store.free_bytes == QUOTA - len(data)
    assert await store.has(cid)
    with pytest.raises(ReservationError):
        await store.get_reservation(rid)


async def test_an_expired_reservation_frees_its_space_at_once(
    store: ChunkStore, clock: FakeClock
) -> None:
    reservation = await store.reserve("upload-1", 20 * KiB, ttl=30)
    rid = reservation.reservation_id
    assert reservation.expires_at == clock.now + 30
    clock.advance(30)
    assert store.reserved_bytes == 0
    assert store.free_bytes == QUOTA
    with pytest.raises(ReservationExpired):
        await store.get_reservation(rid)
    cid, data = make_chunk(22)
    with pytest.raises(ReservationExpired):
        await store.put(cid, data, reservation_id=rid)
    assert await store.expire() == 1
    assert await store.expire() == 0
    with pytest.raises(ReservationError) as excinfo:
        await store.get_reservation(rid)
    assert not isinstance(excinfo.value, ReservationExpired)


@pytest.mark.parametrize(
    ("upload_id", "nbytes", "ttl"),
    [
        ("", 1, 60),
        ("u" * 129, 1, 60),
        ("u\n", 1, 60),
        ("u", 0, 60),
        ("u", -1, 60),
        ("u", 1, 0),
        ("u", 1, -5),
    ],
)
async def test_bad_reservation_requests_are_refused(
    store: ChunkStore, upload_id: str, nbytes: int, ttl: float
) -> None:
    with pytest.raises(InvalidInput):
        await store.reserve(upload_id, nbytes, ttl)
    assert store.reserved_bytes == 0
    assert store.free_bytes == QUOTA


# -- scan -----------------------------------------------------------------------------------


async def test_scan_of_a_healthy_store_quarantines_nothing(store: ChunkStore) -> None:
    for seed in range(3):
        cid, data = make_chunk(seed)
        await store.put(cid, data)
    report = await store.scan()
    assert report.checked == 3
    assert report.quarantined == ()
    assert store.used_bytes == 3 * 4 * KiB
