"""The streaming hasher reads a real file once and gives the same manifest as the pure builder."""

from __future__ import annotations

import asyncio
import os
import threading
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from p2pshare.core.errors import InvalidInput, NotFound
from p2pshare.core.manifest import manifest_of_bytes
from p2pshare.storage.hasher import hash_file, hash_file_sync

K64 = 64 * 1024
WHEN = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize("size", [0, 1, K64 - 1, K64, K64 + 1, 5 * K64 + 12345])
async def test_matches_the_in_memory_manifest(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    await asyncio.to_thread(path.write_bytes, data)
    seen: list[int] = []
    m = await hash_file(path, chunk_size=K64, created=WHEN, on_progress=seen.append)
    assert m == manifest_of_bytes(data, "data.bin", WHEN, K64)
    assert sum(seen) == size
    m.verify()


async def test_name_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "x"
    await asyncio.to_thread(path.write_bytes, b"abc")
    m = await hash_file(path, chunk_size=K64, created=WHEN, name="shown.txt")
    assert m.name == "shown.txt"


async def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        await hash_file(tmp_path / "absent", chunk_size=K64, created=WHEN)
    with pytest.raises(InvalidInput, match="directory"):
        await hash_file(tmp_path, chunk_size=K64, created=WHEN)
    fifo = tmp_path / "fifo"
    await asyncio.to_thread(os.mkfifo, fifo)
    with pytest.raises(InvalidInput, match="not a regular file"):
        # open of a FIFO for reading blocks until a writer comes; give it one
        writer = threading.Thread(target=lambda: fifo.open("wb").close())
        writer.start()
        try:
            await hash_file(fifo, chunk_size=K64, created=WHEN)
        finally:
            await asyncio.to_thread(writer.join, 5)


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
