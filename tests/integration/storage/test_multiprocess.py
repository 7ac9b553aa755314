"""Several processes on one data directory, with real files: same-chunk races and killed writers."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from p2pshare.storage.filestore import FileChunkStore
from tests.unit.storage.support import KiB, chunk_files, make_chunk, temp_files

WORKER = Path(__file__).with_name("put_worker.py")
WAIT = 15.0
"""Seconds to wait for a worker's line before the test fails (never reached when healthy)."""


class Worker:
    """One ``put_worker.py`` process, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def expect(self, line: str) -> None:
        assert await self.line() == line

    async def line(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            raw = await self.proc.stdout.readline()
        if not raw:
            assert self.proc.stderr is not None
            err = await self.proc.stderr.read()
            pytest.fail(f"worker ended early: {err.decode(errors='replace')}")
        return raw.decode().strip()

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def result(self) -> dict[str, object]:
        """Return the put's outcome, with ``wrote``: whether this worker began writing."""
        line, wrote = await self.line(), False
        if line == "writing":
            line, wrote = await self.line(), True
        outcome = {**json.loads(line), "wrote": wrote}
        async with asyncio.timeout(WAIT):
            assert await self.proc.wait() == 0
        return outcome


@asynccontextmanager
async def worker(data_dir: Path, seed: int, size: int, *flags: str) -> AsyncIterator[Worker]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        str(data_dir),
        str(seed),
        str(size),
        *flags,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Worker(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_two_processes_writing_one_chunk_leave_one_good_chunk(tmp_path: Path) -> None:
    size = 16 * KiB
    cid, data = make_chunk(41, size)
    slow = ("--wait-go", "--delay", "0.01")  # 16 pieces, ~0.16 s of writing each
    async with worker(tmp_path, 41, size, *slow) as a, worker(tmp_path, 41, size, *slow) as b:
        await a.expect("ready")
        await b.expect("ready")
        await asyncio.gather(a.send("go"), b.send("go"))
        results = await asyncio.gather(a.result(), b.result())

    assert {r["chunk_id"] for r in results} == {cid}
    assert sorted(r["created"] for r in results) == [False, True]
    # the loser waited for the winner's lock, then found the chunk: it never wrote a byte
    assert [r["wrote"] for r in results] == [r["created"] for r in results]
    files = await asyncio.to_thread(chunk_files, tmp_path)
    assert files == [tmp_path / "chunks" / cid[:2] / cid]
    assert await asyncio.to_thread(files[0].read_bytes) == data


async def test_a_writer_killed_mid_write_leaves_no_visible_chunk(tmp_path: Path) -> None:
    size = 8 * KiB
    cid, _ = make_chunk(42, size)
    async with worker(tmp_path, 42, size, "--hang") as w:
        await w.expect("ready")
        await w.expect("writing")
        w.proc.send_signal(signal.SIGKILL)
        assert await w.proc.wait() == -signal.SIGKILL

    leftovers = await asyncio.to_thread(temp_files, tmp_path)
    assert len(leftovers) == 1, "the killed writer should have left its temp file"
    assert leftovers[0].name.startswith(f".{cid}.")

    async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
        assert not await store.has(cid)
        assert await store.list() == []
        assert store.used_bytes == 0
        assert await asyncio.to_thread(chunk_files, tmp_path) == []


async def test_open_leaves_a_live_writers_temp_file_alone(tmp_path: Path) -> None:
    size = 8 * KiB
    cid, data = make_chunk(43, size)
    async with worker(tmp_path, 43, size, "--pause") as w:
        await w.expect("ready")
        await w.expect("writing")
        async with await FileChunkStore.open(tmp_path, quota=64 * KiB) as store:
            assert len(await asyncio.to_thread(temp_files, tmp_path)) == 1
            assert not await store.has(cid)
            await w.send("go")
            assert (await w.result())["created"] is True
            assert await store.read(cid) == data
    assert await asyncio.to_thread(temp_files, tmp_path) == []


OPENER = """
import asyncio, sys, time
from pathlib import Path
from p2pshare.storage.filestore import FileChunkStore

async def main():
    store = await FileChunkStore.open(Path(sys.argv[1]), quota=2**20)
    await store.close()

time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
asyncio.run(main())
"""


async def test_many_processes_opening_a_fresh_directory_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    """Opening a fresh directory from several processes at once (SQLite set-up races)."""
    start = str(time.time() + 1.0)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPENER,
            str(tmp_path),
            start,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(6)
    ]
    async with asyncio.timeout(WAIT):
        outcomes = [(await p.wait(), (await p.stderr.read()).decode()) for p in procs]  # type: ignore[union-attr]
    assert [code for code, _ in outcomes] == [0] * 6, [err for _, err in outcomes if err]
