"""A holder serves chunk files by ``sendfile`` under uvloop and the standard loop, and copies
only where it must (TLS, an upload rate limit); a peer that stalls or goes is cut cleanly.

The peer API runs in this process, as the node builds it, with a real store on disk, on real
sockets; the clients are raw streams, so a test can read slowly, stall or hang up at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from p2pshare.core.admission import ServerLimits
from p2pshare.node import peer_api, zerocopy
from p2pshare.node.guard import GUARD, PeerGuard
from p2pshare.node.limits import RateLimiter
from p2pshare.node.problems import problems_middleware
from p2pshare.security.keys import load_or_create_identity, server_context
from p2pshare.storage.filestore import FileChunkStore

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
BIG = 16 * MiB
"""More than loopback's socket buffers hold at once, so the send must wait for the reader."""
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


@dataclass
class Holder:
    port: int
    store: FileChunkStore
    app: web.Application
    tls: bool

    @property
    def serving(self) -> asyncio.Semaphore:
        return self.app[peer_api.SERVING]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = None
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=context)


def run(loop: str, scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario)


@contextlib.asynccontextmanager
async def holder(
    data_dir: Path,
    *,
    tls: bool = False,
    upload_rate: float = 0,
    body_timeout: float = 30.0,
) -> AsyncIterator[Holder]:
    """Run the peer API as the node builds it (transfer/runtime.py), on a free port."""
    store = await FileChunkStore.open(data_dir, quota=64 * BIG)
    guard = PeerGuard(ServerLimits(body_timeout=body_timeout))
    app = web.Application(middlewares=[problems_middleware, guard.middleware])
    app[GUARD] = guard
    peer_api.add_routes(app)
    app[peer_api.STORE] = store
    app[peer_api.SERVING] = asyncio.Semaphore(1)  # one at a time: locked() while one is served
    app[peer_api.SENT] = zerocopy.SentCounts()
    if upload_rate:
        app[peer_api.UPLOAD_LIMIT] = RateLimiter(upload_rate)
    context = None
    if tls:
        identity = await asyncio.to_thread(load_or_create_identity, data_dir / "identity")
        context = server_context(identity)
    runner = web.AppRunner(app, access_log=None, **guard.runner_options())
    await runner.setup()
    guard.attach(runner.server)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    try:
        await site.start()
        port = runner.addresses[0][1]
        yield Holder(port, store, app, tls)
    finally:
        await runner.cleanup()
        await store.close()


async def stored(h: Holder, size: int, seed: int = 1) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(size)
    chunk_id = hashlib.sha256(data).hexdigest()
    await h.store.put(chunk_id, data)
    return chunk_id, data


async def wait_for(check: Callable[[], bool], seconds: float) -> None:
    """Wait, bounded, until ``check()`` holds."""
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


async def open_fds() -> int:
    """Return how many descriptors this process has open."""
    return len(await asyncio.to_thread(os.listdir, "/proc/self/fd"))


async def wait_until_async(
    get: Callable[[], Coroutine[Any, Any, int]], want: int, seconds: float
) -> None:
    """Wait, bounded, until ``await get()`` returns ``want``."""
    async with asyncio.timeout(seconds):
        while await get() != want:
            await asyncio.sleep(0.05)


async def sent(h: Holder) -> tuple[int, int]:
    """Return the holder's (zero-copy, copied) counts once it has finished serving (a peer
    may have the last byte a moment before the handler counts it)."""
    await wait_for(lambda: not h.serving.locked(), 10)
    counts = h.app[peer_api.SENT]
    return counts.zero_copy, counts.copied


async def get(
    h: Holder, chunk_id: str, *, method: str = "GET", piece: int = 1 << 16, pause: float = 0.0
) -> tuple[dict[str, str], bytes]:
    """Fetch a chunk on a new connection, reading its body ``piece`` bytes at a time, once
    the holder's one serving slot is free (it is freed a moment after a body's last byte)."""
    await wait_for(lambda: not h.serving.locked(), 10)
    reader, writer = await h.connect()
    try:
        writer.write(f"{method} /v1/chunks/{chunk_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        headers["status"] = lines[0].split()[1]
        want = int(headers.get("content-length", "0")) if method == "GET" else 0
        body = bytearray()
        while len(body) < want:
            got = await reader.read(min(piece, want - len(body)))
            if not got:
                break
            body += got
            if pause:
                await asyncio.sleep(pause)
        return headers, bytes(body)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_chunk_file_is_sent_by_sendfile_to_a_slow_reader_intact(
    tmp_path: Path, loop: str
) -> None:
    async def scenario() -> None:
        async with holder(tmp_path / "h") as h:
            chunk_id, data = await stored(h, BIG)
            fds = await open_fds()
            # small reads with pauses: the socket fills, and the send waits for room many times
            headers, body = await get(h, chunk_id, piece=256 * 1024, pause=0.002)
            assert headers["status"] == "200"
            assert headers["content-length"] == str(BIG)
            assert body == data
            assert await sent(h) == (1, 0)
            # a kept-alive connection carries several sends: two pipelined GETs, each whole
            small_id, small = await stored(h, 3 * MiB + 5, seed=2)
            await wait_for(lambda: not h.serving.locked(), 10)
            reader, writer = await h.connect()
            request = f"GET /v1/chunks/{small_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            writer.write(request * 2)  # pipelined: the second head follows the first body
            for _ in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert await reader.readexactly(len(small)) == small
            writer.close()
            assert await sent(h) == (3, 0)
            # every descriptor the sends used is closed (the server's side of the closed
            # connections goes a moment after the clients')
            with contextlib.suppress(TimeoutError):
                await wait_until_async(open_fds, fds, 5)
            assert await open_fds() == fds

    run(loop, scenario())


def test_head_sends_the_length_and_no_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with holder(tmp_path / "h") as h:
            chunk_id, _ = await stored(h, MiB + 1)
            headers, body = await get(h, chunk_id, method="HEAD")
            assert (headers["status"], headers["content-length"], body) == (
                "200",
                str(MiB + 1),
                b"",
            )
            missing = await get(h, "ab" * 32)
            assert missing[0]["status"] == "404"
            assert await sent(h) == (0, 0)

    run("uvloop", scenario())


def test_over_tls_the_bytes_go_through_the_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with holder(tmp_path / "h", tls=True) as h:
            chunk_id, data = await stored(h, 5 * MiB)
            headers, body = await get(h, chunk_id)
            assert headers["status"] == "200"
            assert body == data
            assert await sent(h) == (0, 1)

    run("uvloop", scenario())


def test_an_upload_rate_limit_paces_through_the_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with holder(tmp_path / "h", upload_rate=1e9) as h:
            chunk_id, data = await stored(h, 2 * MiB)
            assert (await get(h, chunk_id))[1] == data
            assert await sent(h) == (0, 1)

    run("uvloop", scenario())


@pytest.mark.parametrize(("loop", "tls"), [("uvloop", False), ("asyncio", False), ("uvloop", True)])
def test_a_peer_that_stops_reading_is_cut_after_the_body_timeout(
    tmp_path: Path, loop: str, tls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with holder(tmp_path / "h", body_timeout=0.5, tls=tls) as h:
            chunk_id, data = await stored(h, 4 * BIG)
            reader, writer = await h.connect()
            writer.write(f"GET /v1/chunks/{chunk_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            assert h.serving.locked()  # the send holds the slot
            # read nothing for a while: the holder gives up and frees its serving slot (through
            # the process, a 1 MiB piece may wait 16 x 0.5 s)
            await wait_for(lambda: not h.serving.locked(), 30)
            got = 0
            with contextlib.suppress(ConnectionError):
                while piece := await reader.read(1 << 20):
                    got += len(piece)
            assert 0 < got < len(data)  # what was in the buffers, then the end: a cut body
            writer.close()
            assert await sent(h) == (0, 0)

    with caplog.at_level(logging.INFO, logger="p2pshare.node.peer_api"):
        run(loop, scenario())
    said = "per 0.5 s" if tls else "took no bytes for 0.5 s"
    assert any(said in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("tls", [False, True])
def test_a_peer_that_hangs_up_mid_body_is_no_error_and_frees_its_slot(
    tmp_path: Path, tls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with holder(tmp_path / "h", tls=tls) as h:
            chunk_id, data = await stored(h, 4 * BIG)
            reader, writer = await h.connect()
            writer.write(f"GET /v1/chunks/{chunk_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(MiB)
            writer.transport.abort()  # as an endgame's loser does
            await wait_for(lambda: not h.serving.locked(), 10)
            # the holder serves on
            assert (await get(h, chunk_id))[1] == data

    with caplog.at_level(logging.DEBUG, logger="p2pshare"):
        run("uvloop", scenario())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(" cut: " in r.getMessage() for r in caplog.records)
