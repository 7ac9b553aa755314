"""Chunk bodies fetched by worker threads (node/streams.py) from a real HTTP(S) server on
loopback: bytes and hash, kept-alive connections, the checks on length and certificate, problem
answers, cancellation and a server that closes idle connections."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from p2pshare.core.admission import CLIENT_KEEPALIVE, ServerLimits
from p2pshare.core.errors import (
    InvalidInput,
    NotFound,
    RemoteError,
    ReservationError,
    Unavailable,
)
from p2pshare.node import streams
from p2pshare.node.guard import PeerGuard
from p2pshare.node.limits import RateLimiter
from p2pshare.node.problems import problems_middleware
from p2pshare.node.streams import StreamPool
from p2pshare.security.keys import load_or_create_identity, server_context
from p2pshare.storage.filestore import FileChunkStore

BODY = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes


@dataclass
class Server:
    address: str
    connections: set[tuple[str, int]] = field(default_factory=set)
    """the client ends (address, port) seen: one per connection (an id() of a closed
    transport may be reused by the next one)"""
    requests: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """set when the server stops: a stalled push's handler ends"""


async def _serve(
    tmp_path: Path, *, tls: bool, keepalive: float = 75.0
) -> AsyncIterator[tuple[Server, str]]:
    state = Server("")

    async def chunk(request: web.Request) -> web.StreamResponse:
        state.requests += 1
        assert request.transport is not None
        state.connections.add(request.transport.get_extra_info("peername")[:2])
        name = request.match_info["name"]
        if name == "missing":
            raise NotFound("this node has no chunk missing")
        if name == "short":
            return web.Response(body=BODY[:-1])
        if name == "silent":
            await asyncio.sleep(60)
        return web.Response(body=BODY)

    async def push(request: web.Request) -> web.Response:
        state.requests += 1
        assert request.transport is not None
        state.connections.add(request.transport.get_extra_info("peername")[:2])
        if request.match_info["name"] == "refuse":
            raise ReservationError("no reservation r1 here")
        if request.match_info["name"] == "stall":  # reads no body until the server stops
            await state.release.wait()
        body = await request.read()
        answer = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        answer["query"] = request.query_string
        answer["signed"] = request.headers.get("X-Test", "")
        return web.json_response(answer, status=201)

    app = web.Application(middlewares=[problems_middleware], client_max_size=4 << 20)
    app.router.add_get("/v1/chunks/{name}", chunk)
    app.router.add_put("/v1/chunks/{name}", push)
    runner = web.AppRunner(app, keepalive_timeout=keepalive, handler_cancellation=True)
    await runner.setup()
    context = None
    pin = ""
    if tls:
        identity = await asyncio.to_thread(load_or_create_identity, tmp_path / "server")
        context = await asyncio.to_thread(server_context, identity)
        pin = identity.fingerprint
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if tls else "http"
    state.address = f"{scheme}://127.0.0.1:{port}" + (f"#{pin}" if tls else "")
    try:
        yield state, pin
    finally:
        state.release.set()
        await runner.cleanup()


@pytest.fixture(params=[False, True], ids=["http", "https"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    async for state, _ in _serve(tmp_path, tls=request.param):
        yield state


async def test_a_body_lands_in_the_buffer_with_its_hash_over_one_kept_connection(
    server: Server,
) -> None:
    async with StreamPool(workers=2) as pool:
        for _ in range(3):
            buf = memoryview(bytearray(len(BODY)))
            got = await pool.get_into(server.address, "/v1/chunks/a", buf, where="node x")
            assert bytes(got.data) == BODY
            assert got.sha256 == hashlib.sha256(BODY).hexdigest()
    assert server.requests == 3
    assert len(server.connections) == 1  # kept alive and reused


async def test_a_body_of_another_length_and_a_problem_answer_are_our_errors(
    server: Server,
) -> None:
    async with StreamPool(workers=2) as pool:
        buf = memoryview(bytearray(len(BODY)))
        with pytest.raises(RemoteError, match="is 1048579 bytes, expected 1048580"):
            await pool.get_into(server.address, "/v1/chunks/short", buf, where="node x")
        with pytest.raises(NotFound, match="no chunk missing"):
            await pool.get_into(server.address, "/v1/chunks/missing", buf, where="node x")
        with pytest.raises(RemoteError, match="expected 10"):
            await pool.get_into(server.address, "/v1/chunks/a", buf[:10], where="node x")
        # the pool still works after each
        got = await pool.get_into(server.address, "/v1/chunks/a", buf, where="node x")
        assert bytes(got.data) == BODY


async def test_a_cancelled_fetch_frees_its_thread_at_once(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled fetch gives its thread back at once; the error the aborted thread ends with
    is taken, not logged by asyncio as "Future exception was never retrieved" (once per
    cancelled endgame fetch, before)."""
    async with StreamPool(workers=1) as pool:  # one thread: the next fetch needs it back
        buf = memoryview(bytearray(len(BODY)))
        task = asyncio.create_task(
            pool.get_into(server.address, "/v1/chunks/silent", buf, where="node x")
        )
        while server.requests == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        got = await asyncio.wait_for(
            pool.get_into(server.address, "/v1/chunks/a", buf, where="node x"), 20
        )
        assert bytes(got.data) == BODY
        assert time.monotonic() - started < 20  # not the 30 s read timeout of the silent one
    del task
    gc.collect()  # an unretrieved error is logged when its future is collected
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_connection_the_server_closed_while_idle_is_replaced(tmp_path: Path) -> None:
    async for state, _ in _serve(tmp_path, tls=True, keepalive=0.2):
        async with StreamPool(workers=1) as pool:
            buf = memoryview(bytearray(len(BODY)))
            for _ in range(2):
                got = await pool.get_into(state.address, "/v1/chunks/a", buf, where="node x")
                assert got.sha256 == hashlib.sha256(BODY).hexdigest()
                await asyncio.sleep(0.6)  # the server drops the idle connection meanwhile
        assert len(state.connections) == 2


def test_an_idle_connection_is_given_up_before_a_node_closes_it() -> None:
    # a request sent on a connection the holder was closing is lost: a fetch and a push that
    # can rewind are sent again (a second send), any other push fails and the upload gives the
    # holder up (both sides kept it 20 s before)
    served = PeerGuard(ServerLimits()).runner_options()["keepalive_timeout"]
    assert streams.IDLE_SECONDS == CLIENT_KEEPALIVE < served


async def test_a_certificate_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    async for state, pin in _serve(tmp_path, tls=True):
        other = "0" * 64 if pin != "0" * 64 else "1" * 64
        forged = state.address.replace(pin, other)
        async with StreamPool(workers=1) as pool:
            buf = memoryview(bytearray(len(BODY)))
            with pytest.raises(Unavailable, match="does not match the pinned fingerprint"):
                await pool.get_into(forged, "/v1/chunks/a", buf, where="node x")
            with pytest.raises(InvalidInput, match="needs the certificate fingerprint"):
                await pool.get_into(
                    state.address.partition("#")[0], "/v1/chunks/a", buf, where="node x"
                )
        assert state.requests == 0  # nothing was asked of the wrong server


async def test_a_node_that_does_not_answer_is_unavailable() -> None:
    async with StreamPool(workers=1) as pool:
        buf = memoryview(bytearray(4))
        with pytest.raises(Unavailable, match="node x: cannot connect"):
            await pool.get_into("http://127.0.0.1:9", "/v1/chunks/a", buf, where="node x")


class _Source:
    """A blocking source of ``data`` handing out at most ``step`` bytes a read (like a store
    reader), or stopping early after ``stop`` bytes."""

    def __init__(self, data: bytes, step: int, stop: int | None = None) -> None:
        self._data = data[:stop] if stop is not None else data
        self._step = step
        self._at = 0

    def read_into(self, into: memoryview) -> int:
        piece = self._data[self._at : self._at + min(self._step, len(into))]
        into[: len(piece)] = piece
        self._at += len(piece)
        return len(piece)


async def test_a_push_sends_bytes_or_a_source_and_returns_the_answer(server: Server) -> None:
    async with StreamPool(workers=2) as pool:
        for body in (BODY, _Source(BODY, 300_001)):
            raw = await pool.put_from(
                server.address,
                "/v1/chunks/a?reservation=r1",
                {"X-Test": "yes", "Content-Type": "application/octet-stream"},
                body,
                len(BODY),
                where="node x",
            )
            answer = json.loads(raw)
            assert answer == {
                "size": len(BODY),
                "sha256": hashlib.sha256(BODY).hexdigest(),
                "query": "reservation=r1",
                "signed": "yes",
            }
    assert len(server.connections) == 1  # the second push reused the first's connection


async def test_a_refused_push_and_a_source_that_ends_early_are_our_errors(
    server: Server,
) -> None:
    async with StreamPool(workers=1) as pool:
        with pytest.raises(ReservationError, match="no reservation r1"):
            await pool.put_from(
                server.address, "/v1/chunks/refuse", {}, BODY, len(BODY), where="node x"
            )
        with pytest.raises(RemoteError, match="ended at 1000 of"):
            await pool.put_from(
                server.address,
                "/v1/chunks/a",
                {},
                _Source(BODY, 4096, stop=1000),
                len(BODY),
                where="node x",
            )
        raw = await pool.put_from(server.address, "/v1/chunks/a", {}, b"ok", 2, where="node x")
        assert json.loads(raw)["size"] == 2  # the pool still works


class _FileSource:
    """A blocking source with the descriptor of a file (as a chunk store's reader has)."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")

    def fileno(self) -> int:
        return self._fh.fileno()

    def read_into(self, into: memoryview) -> int:
        return self._fh.readinto(into)

    def close(self) -> None:
        self._fh.close()


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)


async def _push(
    pool: StreamPool, address: str, body: Any, size: int, path: str = "/v1/chunks/a"
) -> dict[str, Any]:
    return dict(json.loads(await pool.put_from(address, path, {}, body, size, where="n")))


async def _push_from_store(
    pool: StreamPool, address: str, tmp_path: Path, data: bytes
) -> dict[str, Any]:
    store = await FileChunkStore.open(tmp_path / "store", quota=64 << 20)
    try:
        chunk_id = hashlib.sha256(data).hexdigest()
        await store.put(chunk_id, data)
        async with await store.get(chunk_id) as reader:
            return await _push(pool, address, reader, reader.size, f"/v1/chunks/{chunk_id}")
    finally:
        await store.close()


async def test_a_chunk_file_is_pushed_by_sendfile_on_plain_http_and_copied_over_tls(
    server: Server, tmp_path: Path
) -> None:
    data = random.Random(7).randbytes(3 * (1 << 20) + 5)
    async with StreamPool(workers=2) as pool:
        answer = await _push_from_store(pool, server.address, tmp_path, data)
        plain = server.address.startswith("http://")
        assert (pool.pushed.zero_copy, pool.pushed.copied) == ((1, 0) if plain else (0, 1))
        # a source without a descriptor is copied either way, on the same kept connection
        await pool.put_from(
            server.address, "/v1/chunks/b", {}, _Source(BODY, 4096), len(BODY), where="node x"
        )
        assert pool.pushed.copied == (1 if plain else 2)
    assert answer["size"] == len(data)
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(server.connections) == 1


async def test_an_upload_limit_pushes_a_chunk_file_through_the_process(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(1 << 20)
    async for state, _ in _serve(tmp_path, tls=False):
        async with StreamPool(workers=1, upload=RateLimiter(1 << 30)) as pool:
            answer = await _push_from_store(pool, state.address, tmp_path, data)
            assert (pool.pushed.zero_copy, pool.pushed.copied) == (0, 1)
        assert answer["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_chunk_file_shorter_than_its_size_is_our_error(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    await asyncio.to_thread(path.write_bytes, BODY[:1000])
    source = await asyncio.to_thread(_FileSource, path)
    try:
        async for state, _ in _serve(tmp_path, tls=False):
            async with StreamPool(workers=1) as pool:
                with pytest.raises(RemoteError, match="node x: the chunk file to send is short"):
                    await pool.put_from(
                        state.address, "/v1/chunks/a", {}, source, len(BODY), where="node x"
                    )
                raw = await pool.put_from(
                    state.address, "/v1/chunks/a", {}, b"ok", 2, where="node x"
                )
                assert json.loads(raw)["size"] == 2  # the pool still works
                assert pool.pushed.zero_copy == 0
    finally:
        source.close()


async def test_a_cancelled_push_by_sendfile_frees_its_thread_at_once(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    await asyncio.to_thread(_sparse, path, 256 << 20)  # more than the sockets' buffers take
    source = await asyncio.to_thread(_FileSource, path)
    try:
        async for state, _ in _serve(tmp_path, tls=False):
            async with StreamPool(workers=1) as pool:  # one thread: the next push needs it
                task = asyncio.create_task(
                    pool.put_from(
                        state.address, "/v1/chunks/stall", {}, source, 256 << 20, where="node x"
                    )
                )
                while state.requests == 0:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)  # the sockets' buffers fill; sendfile waits
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                started = time.monotonic()
                raw = await asyncio.wait_for(
                    pool.put_from(state.address, "/v1/chunks/a", {}, b"ok", 2, where="node x"),
                    10,
                )
                assert json.loads(raw)["size"] == 2
                assert time.monotonic() - started < 5  # not the 30 s of a stalled send
                assert pool.pushed.zero_copy == 0  # the cancelled one was not sent in full
    finally:
        source.close()


@dataclass
class _Closer:
    """A raw HTTP/1.1 server that answers the first push on each connection and closes the
    connection (a reset) as the next request on it arrives: a server closing an idle kept
    connection just as the client sends on it."""

    address: str = ""
    connections: int = 0
    answered: list[int] = field(default_factory=list)


async def _closer() -> AsyncIterator[_Closer]:
    state = _Closer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            body = await reader.readexactly(length)
            state.answered.append(len(body))
            answer = json.dumps({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\n\r\n{answer}".encode()
            )
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request's head: gone, unanswered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.address = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def test_a_push_on_a_kept_connection_closed_as_it_was_sent_is_sent_again(
    tmp_path: Path,
) -> None:
    """Bytes, a chunk file sent by sendfile and one read piece by piece (an upload limit) are
    sent again on a fresh connection; a source that cannot rewind fails, not sent again."""
    data = random.Random(9).randbytes(2 << 20)
    digest = hashlib.sha256(data).hexdigest()
    store = await FileChunkStore.open(tmp_path / "store", quota=64 << 20)
    await store.put(digest, data)
    try:
        for limit in (None, RateLimiter(1 << 30)):
            async for state in _closer():
                async with StreamPool(workers=1, upload=limit) as pool:
                    assert (await _push(pool, state.address, b"first", 5))["size"] == 5
                    assert (await _push(pool, state.address, data, len(data)))["sha256"] == digest
                    async with await store.get(digest) as reader:
                        answer = await _push(pool, state.address, reader, reader.size)
                    assert answer == {"size": len(data), "sha256": digest}
                    with pytest.raises(Unavailable, match="n: "):
                        await _push(pool, state.address, _Source(data, 4096), len(data))
                    assert (pool.pushed.zero_copy, pool.pushed.copied) == (
                        (1, 0) if limit is None else (0, 1)
                    )
                # each push after the first found its kept connection closed as it went: the
                # next two were answered on a fresh one each, the last was not sent again
                assert state.connections == 3
                assert state.answered == [5, len(data), len(data)]
    finally:
        await store.close()
