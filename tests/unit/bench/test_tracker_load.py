"""The load generator's bare HTTP client (bench/tracker_load.py): its response parser on
plain bytes, and :class:`Connection` against a real server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.unit.bench.loader import load_bench

tl = load_bench("tracker_load")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


@pytest.mark.parametrize(
    ("wire", "closed", "want"),
    [
        (OK, False, (200, b"hello", True, len(OK))),
        (OK + b"HTTP/1.1 404", False, (200, b"hello", True, len(OK))),
        (OK[:-1], False, None),
        (OK[:20], False, None),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", False, (204, b"", True, 46)),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            False,
            (200, b"x", False, 58),
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", False, (200, b"x", False, 39)),
        (
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx",
            False,
            (200, b"x", True, 63),
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nd8:intervali5ee", False, None),
        (b"HTTP/1.0 200 OK\r\n\r\nd8:intervali5ee", True, (200, b"d8:intervali5ee", False, 34)),
        (OK, True, (200, b"hello", False, len(OK))),
    ],
)
def test_parse_response(
    wire: bytes, closed: bool, want: tuple[int, bytes, bool, int] | None
) -> None:
    assert tl.parse_response(wire, closed) == want


@pytest.mark.parametrize(
    ("wire", "closed", "problem"),
    [
        (b"HTTP/1.1 200", True, "before a whole response head"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", False, "not an HTTP/1.x response"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", False, "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", False, "bad content-length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False, "chunked"),
        (OK[:-1], True, "inside a response body"),
    ],
)
def test_parse_response_refuses(wire: bytes, closed: bool, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        tl.parse_response(wire, closed)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WAIT = 10.0


@asynccontextmanager
async def clients(handler: Handler, count: int = 1) -> AsyncIterator[list[Any]]:
    """Serve ``handler`` on a loopback port; yield ``count`` connections to it
    (``tracker_load.connections``), closed on the way out; the whole block under a timeout."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conns = tl.connections(f"http://127.0.0.1:{port}", count)
    try:
        async with asyncio.timeout(WAIT):
            yield conns
    finally:
        for conn in conns:
            conn.close()
        server.close()
        await server.wait_closed()


async def test_connection_keeps_alive_and_reconnects_when_the_server_closes() -> None:
    """Three requests: two on one kept-alive connection, the second answered with
    ``Connection: close``, so the third opens a new one."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        n = 0
        while head := await reader.readuntil(b"\r\n\r\n"):
            n += 1
            assert head.startswith(b"GET /x HTTP/1.1\r\nhost: 127.0.0.1:")
            close = n == 2 and len(accepted) == 1
            extra = b"Connection: close\r\n" if close else b""
            body = f"c{len(accepted)}r{n}".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()
            if close:
                writer.close()
                return

    async with clients(serve) as (conn,):
        request = conn.head("GET", "/x", {})
        got = [await conn.send(request) for _ in range(3)]
    assert got == [(200, b"c1r1"), (200, b"c1r2"), (200, b"c2r1")]
    assert len(accepted) == 2


async def test_connection_sends_again_when_a_kept_connection_was_closed_silently() -> None:
    """As opentracker does: HTTP/1.1 answers with a length, then the connection is closed
    without ``Connection: close``; a request sent on it goes again on a new connection."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)  # the next request came on this connection: closed unanswered
        writer.close()

    async with clients(serve) as (conn,):
        request = conn.head("GET", "/x", {})
        got = [await conn.send(request) for _ in range(5)]
    assert got == [(200, b"ok")] * 5
    assert len(accepted) == 5


async def test_connections_to_loopback_come_from_addresses_of_their_own() -> None:
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername")[0])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with clients(serve, 3) as conns:
        for conn in conns:
            assert await conn.send(conn.head("GET", "/", {})) == (204, b"")
    assert seen == ["127.1.0.1", "127.1.0.2", "127.1.0.3"]


async def test_connection_fails_on_a_server_that_hangs_up() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        writer.close()

    async with clients(serve) as (conn,):
        with pytest.raises(ConnectionError, match="inside a response body"):
            await conn.send(conn.head("GET", "/x", {}))


def test_connection_refuses_what_is_not_an_http_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        tl.Connection("ftp://127.0.0.1:21")
