"""The streaming hasher reads a real file once and gives the same manifest as the pure builder."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from p2pshare.core.errors import InvalidInput, NotFound, QuotaExceeded
from p2pshare.core.ids import chunk_id
from p2pshare.core.manifest import manifest_of_bytes
from p2pshare.security import sealing
from p2pshare.storage.filestore import FileChunkStore
from p2pshare.storage.hasher import STORES_IN_FLIGHT, hash_file_sync, ingest_file

K64 = 64 * 1024
WHEN = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize("size", [0, 1, K64 - 1, K64, K64 + 1, 5 * K64 + 12345])
def test_matches_the_in_memory_manifest(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    seen: list[int] = []
    m = hash_file_sync(path, chunk_size=K64, created=WHEN, on_progress=seen.append)
    assert m == manifest_of_bytes(data, "data.bin", WHEN, K64)
    assert sum(seen) == size
    m.verify()


def test_name_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    m = hash_file_sync(path, chunk_size=K64, created=WHEN, name="shown.txt")
    assert m.name == "shown.txt"


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        hash_file_sync(tmp_path / "absent", chunk_size=K64, created=WHEN)
    with pytest.raises(InvalidInput, match="directory"):
        hash_file_sync(tmp_path, chunk_size=K64, created=WHEN)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="not a regular file"):
        # open of a FIFO for reading blocks until a writer comes; give it one
        writer = threading.Thread(target=lambda: fifo.open("wb").close())
        writer.start()
        try:
            hash_file_sync(fifo, chunk_size=K64, created=WHEN)
        finally:
            writer.join(5)


def test_memory_is_bounded_by_one_chunk(tmp_path: Path) -> None:
    """A 256 MiB (sparse) file hashed with 1 MiB chunks allocates about one chunk, not the file."""
    chunk = 1024 * 1024
    path = tmp_path / "big.bin"
    with path.open("wb") as fh:
        fh.truncate(256 * chunk)
    tracemalloc.start()
    try:
        m = hash_file_sync(path, chunk_size=chunk, created=WHEN)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.size == 256 * chunk
    assert len(set(m.chunk_ids)) == 1
    assert peak < 3 * chunk, f"peak {peak} bytes for a {m.size}-byte file"


@pytest.mark.parametrize("chunks", [0, 1, 2, 9])
@pytest.mark.parametrize("tail", [0, 1, K64 - 1])
async def test_ingest_stores_every_chunk_and_gives_the_builder_s_manifest(
    tmp_path: Path, chunks: int, tail: int
) -> None:
    # more chunks than the pipeline's buffers: every buffer is reused while earlier writes run
    data = os.urandom(chunks * K64 + tail)
    path = tmp_path / "data.bin"
    await asyncio.to_thread(path.write_bytes, data)
    seen: list[int] = []
    async with await FileChunkStore.open(tmp_path / "store", quota=1 << 30) as store:
        m = await ingest_file(store, path, chunk_size=K64, created=WHEN, on_progress=seen.append)
        assert m == manifest_of_bytes(data, "data.bin", WHEN, K64)
        assert sum(seen) == len(data)
        for i, cid in enumerate(m.chunk_ids):
            assert await store.read(cid) == data[i * K64 : (i + 1) * K64]


async def test_ingest_into_a_full_store_fails_and_leaves_no_worker_on_the_file(
    tmp_path: Path,
) -> None:
    data = os.urandom(12 * K64)
    path = tmp_path / "data.bin"
    await asyncio.to_thread(path.write_bytes, data)
    async with await FileChunkStore.open(tmp_path / "store", quota=5 * K64) as store:
        with pytest.raises(QuotaExceeded):
            await ingest_file(store, path, chunk_size=K64, created=WHEN)
        # the chunks stored stay, for a resumed upload: up to the quota. Which ones is a race:
        # with 3 writes in flight a later chunk may take the last room before an earlier one,
        # whose failure then cancels the writes still running (seen: 4 of 5 stored)
        stored = await store.list()
        assert 0 < len(stored) <= 5
        assert store.used_bytes == len(stored) * K64
        pieces = {chunk_id(data[i : i + K64]): data[i : i + K64] for i in range(0, len(data), K64)}
        for cid in stored:
            assert await store.read(cid) == pieces[cid]
        # no write is still running: a file of the first chunk is taken (already there)
        first = tmp_path / "first.bin"
        await asyncio.to_thread(first.write_bytes, data[:K64])
        m = await ingest_file(store, first, chunk_size=K64, created=WHEN)
        assert await store.read(m.chunk_ids[0]) == data[:K64]


def test_ingest_memory_is_bounded_by_a_few_chunks(tmp_path: Path) -> None:
    """256 MiB (sparse) in 1 MiB chunks: the pipeline's buffers, not the file."""
    chunk = 1024 * 1024
    path = tmp_path / "big.bin"
    with path.open("wb") as fh:
        fh.truncate(256 * chunk)

    async def run() -> int:
        async with await FileChunkStore.open(tmp_path / "store", quota=1 << 30) as store:
            m = await ingest_file(store, path, chunk_size=chunk, created=WHEN)
            return m.size

    tracemalloc.start()
    try:
        size = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 256 * chunk
    assert peak < (STORES_IN_FLIGHT + 4) * chunk, f"peak {peak} bytes for a {size}-byte file"


async def test_an_encrypted_ingest_stores_each_chunk_sealed_in_order(tmp_path: Path) -> None:
    key = bytes(range(32))
    piece = sealing.plain_chunk_size(K64)
    data = os.urandom(9 * piece + 77)  # more chunks than the pipeline's buffers
    path = tmp_path / "secret.bin"
    await asyncio.to_thread(path.write_bytes, data)
    async with await FileChunkStore.open(tmp_path / "store", quota=1 << 30) as store:
        m = await ingest_file(store, path, chunk_size=K64, created=WHEN, key=key)
        assert m.name == sealing.ENCRYPTED_NAME and len(m.chunk_ids) == 10
        opened = memoryview(bytearray(piece))
        plain = b"".join(
            [
                bytes(sealing.decrypt_chunk_into(key, i, await store.read(cid), opened))
                for i, cid in enumerate(m.chunk_ids)
            ]
        )
    assert plain == data
    assert sealing.unseal(key, m.sealed or "").sha256 == hashlib.sha256(data).hexdigest()
