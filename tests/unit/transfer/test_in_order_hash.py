"""The whole-file SHA-256 of a download, computed in file order as chunks land in any order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest

from p2pshare.core.chunking import ChunkPlan
from p2pshare.core.errors import IntegrityError
from p2pshare.storage.diskio import BlockFile, try_direct
from p2pshare.transfer.download import _InOrderHash

CHUNK = 64 * 1024


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "cached"])
@pytest.mark.parametrize("size", [0, 1, CHUNK, 7 * CHUNK + 123])
async def test_chunks_written_in_any_order_hash_to_the_file(
    tmp_path: Path, size: int, direct: bool
) -> None:
    data = random.Random(size).randbytes(size)
    plan = ChunkPlan.for_size(size, CHUNK)
    part = tmp_path / "f.part"
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        out = BlockFile(fd, direct=direct and try_direct(fd))
        whole = _InOrderHash(out, plan)
        task = asyncio.create_task(whole.run())
        order = list(range(plan.count))
        random.Random(1).shuffle(order)
        for i in order:
            span = plan.span(i)
            piece = data[span.offset : span.offset + span.length]
            out.write_at(piece, span.offset, end_of_file=span.offset + span.length == size)
            whole.mark([i])
            await asyncio.sleep(0)
        assert await asyncio.wait_for(task, 10) == hashlib.sha256(data).hexdigest()
        assert (
            await asyncio.to_thread(part.read_bytes) == data
        )  # the direct tail's padding is cut off again
    finally:
        os.close(fd)


async def test_a_chunk_not_written_is_waited_for_and_a_short_file_is_an_error(
    tmp_path: Path,
) -> None:
    plan = ChunkPlan.for_size(3 * CHUNK, CHUNK)
    fd = os.open(tmp_path / "f.part", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"x" * CHUNK, 0)  # only the first chunk's bytes exist
        whole = _InOrderHash(BlockFile(fd, direct=try_direct(fd)), plan)
        task = asyncio.create_task(whole.run())
        whole.mark([0, 2])
        await asyncio.sleep(0.05)
        assert not task.done()  # chunk 1 is missing: nothing past chunk 0 is hashed
        whole.mark([1])
        with pytest.raises(IntegrityError, match="ends at"):
            await asyncio.wait_for(task, 10)
    finally:
        os.close(fd)
