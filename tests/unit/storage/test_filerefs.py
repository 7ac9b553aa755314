"""Chunks served from a downloaded file (``FileChunkStore.keep``): no second copy, only while
the file is unchanged, hashed when read, kept across a restart once the file has its name."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pshare.core.errors import IntegrityError, NotFound
from p2pshare.storage.filestore import FileChunkStore
from tests.unit.storage.support import KiB, chunk_files, make_chunk

QUOTA = 64 * KiB


def write_file(path: Path, parts: list[bytes]) -> None:
    path.write_bytes(b"".join(parts))


async def downloaded(tmp_path: Path, store: FileChunkStore) -> tuple[Path, list[tuple[str, bytes]]]:
    """Keep three chunks written in a part file, then give the file its name; return it and
    the chunks (id, bytes)."""
    chunks = [make_chunk(seed, 8 * KiB) for seed in (1, 2, 3)]
    part, out = tmp_path / "f.bin.part", tmp_path / "f.bin"
    await asyncio.to_thread(write_file, part, [data for _, data in chunks])
    for i, (cid, data) in enumerate(chunks):
        await store.keep(cid, data, at=(part, i * 8 * KiB))
    await asyncio.to_thread(part.rename, out)
    await store.kept_file_moved(part, out)
    return out, chunks


async def test_a_kept_chunk_is_served_from_the_file_without_a_copy(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        _, chunks = await downloaded(tmp_path, store)
        assert await asyncio.to_thread(chunk_files, tmp_path / "store") == []
        assert store.free_bytes == QUOTA  # a reference takes none of the quota
        assert await store.list() == sorted(cid for cid, _ in chunks)
        for cid, data in chunks:
            assert await store.has(cid)
            assert await store.size(cid) == len(data)
            assert await store.read(cid) == data
            assert store.referenced(cid)


async def test_references_into_a_part_file_serve_while_it_is_written(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        cid, data = make_chunk(4, 8 * KiB)
        part = tmp_path / "g.part"
        await asyncio.to_thread(write_file, part, [b"\0" * 8 * KiB, data])
        await store.keep(cid, data, at=(part, 8 * KiB))
        assert await store.read(cid) == data
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        assert not await store.has(cid)  # a part file's references live in memory only


async def test_a_part_file_missing_for_a_moment_costs_one_reference_and_reports_nothing(
    tmp_path: Path,
) -> None:
    """Between the rename of a finished download and ``kept_file_moved`` its part file is
    gone: a peer asking then must not make the store drop the whole file or report it lost."""
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        chunks = [make_chunk(seed, 8 * KiB) for seed in (6, 7, 8)]
        part, out = tmp_path / "h.bin.part", tmp_path / "h.bin"
        await asyncio.to_thread(write_file, part, [data for _, data in chunks])
        for i, (cid, data) in enumerate(chunks):
            await store.keep(cid, data, at=(part, i * 8 * KiB))
        await asyncio.to_thread(part.rename, out)  # the download finishes its file
        with pytest.raises(NotFound):
            await store.read(chunks[0][0])  # a peer asks in between
        await store.kept_file_moved(part, out)
        assert await nothing_broken(store)
        for cid, data in chunks[1:]:
            assert await store.read(cid) == data


async def test_references_are_kept_across_a_restart(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        _, chunks = await downloaded(tmp_path, store)
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        for cid, data in chunks:
            assert await store.read(cid) == data


async def test_a_changed_file_is_no_longer_served_and_the_scan_reports_it(
    tmp_path: Path,
) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        out, chunks = await downloaded(tmp_path, store)
        report = await store.scan()
        assert (report.checked, report.quarantined) == (3, ())
        await asyncio.to_thread(lambda: out.open("ab").write(b"!"))  # the user edits it
        report = await store.scan()
        assert sorted(report.quarantined) == sorted(cid for cid, _ in chunks)
        for cid, _ in chunks:
            assert not await store.has(cid)
            with pytest.raises(NotFound):
                await store.get(cid)
        assert await store.list() == []
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        assert await store.list() == []  # dropped for good


async def test_a_deleted_file_is_no_longer_served(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        out, chunks = await downloaded(tmp_path, store)
        await asyncio.to_thread(out.unlink)
        cid = chunks[0][0]
        assert not await store.has(cid)
        with pytest.raises(NotFound):
            await store.size(cid)
        # one look at one chunk drops every chunk of the file, and says so (for the tracker)
        assert await broken(store) == sorted(c for c, _ in chunks)
        assert await store.list() == []


async def broken(store: FileChunkStore) -> list[str]:
    """Return what :meth:`FileChunkStore.broken_refs` has to say, waiting at most 5 s."""
    async with asyncio.timeout(5):
        return await store.broken_refs()


async def nothing_broken(store: FileChunkStore) -> bool:
    """Return whether :meth:`FileChunkStore.broken_refs` has nothing to say (within 0.2 s)."""
    try:
        async with asyncio.timeout(0.2):
            await store.broken_refs()
    except TimeoutError:
        return True
    return False


async def test_bytes_changed_behind_the_same_identity_fail_the_read(tmp_path: Path) -> None:
    """A range that no longer hashes to its chunk ends the read with IntegrityError (a peer
    gets a cut transfer, not a wrong chunk) and is not served again."""
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        out, chunks = await downloaded(tmp_path, store)
        st = await asyncio.to_thread(out.stat)

        def flip() -> None:
            with out.open("r+b") as f:
                f.seek(10)
                byte = f.read(1)
                f.seek(10)
                f.write(bytes([byte[0] ^ 0xFF]))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime

        await asyncio.to_thread(flip)
        cid = chunks[0][0]
        with pytest.raises(IntegrityError):
            await store.read(cid)
        assert not await store.has(cid)
        assert await store.read(chunks[1][0]) == chunks[1][1]  # the others are intact
        assert await broken(store) == [cid]


async def test_delete_drops_a_reference_and_a_put_replaces_it(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        _, chunks = await downloaded(tmp_path, store)
        (gone, _), (copied, data) = chunks[0], chunks[1]
        await store.delete(gone)
        assert not await store.has(gone)
        with pytest.raises(NotFound):
            await store.delete(gone)
        await store.put(copied, data)  # a chunk file of its own (an upload, a repair)
        assert not store.referenced(copied)
        assert await store.read(copied) == data
        assert store.free_bytes == QUOTA - len(data)
        assert await nothing_broken(store)  # dropped on purpose: nothing was lost
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        assert await store.list() == sorted([copied, chunks[2][0]])


async def test_without_a_file_keep_stores_a_copy(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        cid, data = make_chunk(5, 8 * KiB)
        await store.keep(cid, data, at=None)  # an encrypted download: no plain part file
        assert not store.referenced(cid)
        assert await asyncio.to_thread(chunk_files, tmp_path / "store") == [store.path(cid)]


async def test_a_kept_chunk_read_into_a_buffer_is_checked_too(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        _, chunks = await downloaded(tmp_path, store)
        cid, data = chunks[2]
        reader = await store.get(cid)
        async with reader:
            buf = bytearray(3 * KiB)
            got = bytearray()
            while n := await asyncio.to_thread(reader.read_into, memoryview(buf)):
                got += buf[:n]
        assert bytes(got) == data


async def test_a_kept_chunk_rewinds_and_is_checked_again(tmp_path: Path) -> None:
    async with await FileChunkStore.open(tmp_path / "store", quota=QUOTA) as store:
        _, chunks = await downloaded(tmp_path, store)
        cid, data = chunks[1]
        async with await store.get(cid) as reader:
            half = memoryview(bytearray(4 * KiB))
            assert await asyncio.to_thread(reader.read_into, half) == 4 * KiB
            assert await asyncio.to_thread(reader.rewind)  # the hash starts again too
            whole = memoryview(bytearray(len(data)))
            assert await asyncio.to_thread(reader.read_into, whole) == len(data)
        assert bytes(whole) == data
