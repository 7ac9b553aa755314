"""Direct I/O writes and reads (storage/diskio.py): the bytes on disk are exactly the bytes
given, whatever their length and piece sizes, with and without O_DIRECT."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pshare.core.ids import chunk_id
from p2pshare.storage import diskio
from p2pshare.storage.diskio import BLOCK, STAGE_SIZE, AtomicWriter, BlockFile, try_direct

SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, STAGE_SIZE - 1, STAGE_SIZE, 2 * STAGE_SIZE + 777]


def test_this_filesystem_takes_direct_io(tmp_path: Path) -> None:
    # the other tests here would pass through the page cache otherwise, proving less
    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert try_direct(fd), "tmp_path is not on a filesystem with O_DIRECT (tmpfs?)"
    finally:
        os.close(fd)


@pytest.mark.parametrize("held", ["bytes", "aligned"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "cached"])
@pytest.mark.parametrize("size", SIZES)
def test_atomic_writer_stores_exactly_the_bytes_given(
    tmp_path: Path, size: int, direct: bool, held: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not direct:
        monkeypatch.setattr(diskio, "try_direct", lambda fd: False)
    data = random.Random(size).randbytes(size)
    cid = chunk_id(data)
    diskio.make_dirs(tmp_path)
    writer = AtomicWriter(tmp_path, cid)
    writer.start()
    # uneven pieces, as a network body arrives
    pieces = random.Random(1)
    start = 0
    while start < size:
        end = min(size, start + pieces.randint(1, 300_000))
        writer.write(held_in(held, data[start:end]))
        start = end
    assert writer.finish() == cid
    writer.publish()
    assert diskio.chunk_path(tmp_path, cid).read_bytes() == data


def test_a_discarded_direct_write_leaves_nothing_and_gives_its_buffer_back(tmp_path: Path) -> None:
    diskio.make_dirs(tmp_path)
    for _ in range(3 * diskio.STAGES_KEPT):  # more than the kept buffers: none leaks
        writer = AtomicWriter(tmp_path, "a" * 64)
        writer.start()
        writer.write(b"x" * (BLOCK + 5))
        writer.discard()
    assert list((tmp_path / diskio.CHUNKS_DIR).rglob("*.tmp")) == []
    assert len(diskio._STAGES._free) <= diskio.STAGES_KEPT


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(0, 3 * STAGE_SIZE),
    chunk=st.sampled_from([64 * 1024, 1 << 20, 4 << 20]),
    seed=st.integers(0, 2**16),
    held=st.sampled_from(["bytes", "aligned", "unaligned"]),
)
def test_block_writer_assembles_any_file_from_chunks_in_any_order(
    tmp_path: Path, size: int, chunk: int, seed: int, held: str
) -> None:
    rnd = random.Random(seed)
    data = rnd.randbytes(size)
    path = tmp_path / f"f{seed}-{size}-{chunk}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        out = BlockFile(fd, direct=try_direct(fd))
        offsets = list(range(0, size, chunk))
        rnd.shuffle(offsets)
        for offset in offsets:
            piece = held_in(held, data[offset : offset + chunk])
            out.write_at(piece, offset, end_of_file=offset + len(piece) == size)
        digest = hashlib.sha256()
        out.hash_range(digest, 0, size)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    path.unlink()


def held_in(kind: str, data: bytes) -> bytes | memoryview:
    """Return ``data`` as bytes, in a page-aligned buffer (written without staging), or in a
    writable buffer one byte off alignment (staged)."""
    if kind == "bytes":
        return data
    skew = 0 if kind == "aligned" else 1
    buf = diskio.aligned_buffer(len(data) + skew)
    buf[skew : skew + len(data)] = data
    return memoryview(buf)[skew : skew + len(data)]


def test_whole_blocks_of_an_aligned_buffer_are_written_without_a_staging_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged: list[int] = []
    take = diskio._STAGES.take
    monkeypatch.setattr(diskio._STAGES, "take", lambda: staged.append(1) or take())
    data = random.Random(5).randbytes(3 * STAGE_SIZE)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        out = BlockFile(fd, direct=try_direct(fd))
        out.write_at(held_in("aligned", data), 0)
        assert staged == []
        out.write_at(held_in("unaligned", data), len(data))  # staged, and still right
        assert staged == [1]
        out.write_at(held_in("aligned", data[: BLOCK + 9]), 2 * len(data), end_of_file=True)
        assert staged == [1, 1]  # only the 9 bytes past the last whole block
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data + data + data[: BLOCK + 9]


@pytest.mark.parametrize("held", ["aligned", "unaligned"])
def test_a_direct_write_the_kernel_refuses_is_written_through_the_cache(
    tmp_path: Path, held: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = os.pwrite, []

    def refuse_first(fd: int, data: memoryview, offset: int) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(diskio.os, "pwrite", refuse_first)
    data = random.Random(6).randbytes(STAGE_SIZE + 3)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        out = BlockFile(fd, direct=try_direct(fd))
        out.write_at(held_in(held, data), 0, end_of_file=True)
        assert not out.direct
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data


def test_hash_range_of_a_file_shorter_than_asked_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"y" * (BLOCK + 3))
    fd = os.open(path, os.O_RDONLY)
    try:
        out = BlockFile(fd, direct=try_direct(fd))
        with pytest.raises(OSError, match="ends at"):
            out.hash_range(hashlib.sha256(), 0, 3 * BLOCK)
    finally:
        os.close(fd)
