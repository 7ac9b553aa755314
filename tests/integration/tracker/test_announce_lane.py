"""The announce lane below ASGI (``fastlane.AnnounceLaneProtocol``) on a real uvicorn server
over TCP: it answers as FastAPI does, counts each request once against the rate, keeps
uvicorn's keep-alive and pipelining rules, and hands on what it does not take."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from p2pshare.core.admission import ServerLimits
from p2pshare.tracker.app import create_app
from p2pshare.tracker.clock import FakeClock
from p2pshare.tracker.fastlane import LaneCounts, lane_protocol
from p2pshare.tracker.server import base_url, bind, uvicorn_config
from p2pshare.tracker.settings import TrackerSettings
from tests.integration.tracker.support import SignAsSender, body, nid, node
from tests.integration.tracker.test_fastlane import (
    ANNOUNCE,
    CASES,
    LANE,
    ROUTE,
    good,
    sign,
    without_skew,
)

START_TIMEOUT = 10.0


@dataclass
class Served:
    """A tracker served by uvicorn with the lane, on a loopback port, plain HTTP."""

    app: FastAPI
    client: httpx.AsyncClient
    counts: LaneCounts
    host: str
    port: int
    server: uvicorn.Server


@asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[Served]:
    settings = TrackerSettings(data_dir=tmp_path / "tracker", tls=False, **overrides)
    app = create_app(settings, clock=FakeClock())
    protocol = lane_protocol(settings.limits, app)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(settings, app, protocol))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not server.started:
                assert not task.done(), "the server stopped while starting"
                await asyncio.sleep(0.02)
        url = base_url(sock)
        host, port = sock.getsockname()[:2]
        async with httpx.AsyncClient(base_url=url, auth=SignAsSender(), timeout=10) as client:
            yield Served(app, client, protocol.counts, host, port, server)
    finally:
        server.should_exit = True
        async with asyncio.timeout(START_TIMEOUT):
            await task
        sock.close()


def is_object(content: bytes) -> bool:
    try:
        return isinstance(json.loads(content), dict)
    except ValueError:
        return False


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_lane_answers_as_the_route_over_tcp(tmp_path: Path, case: str) -> None:
    """Each request gets the same status, type and body from the lane as from FastAPI (the
    route's content type), and the lane took exactly the JSON objects."""
    status, make = CASES[case]
    answers = []
    async with served(tmp_path) as s:
        for content_type in (LANE, ROUTE):
            content, headers = make()  # signed now: a stale time is as stale in both
            r = await s.client.post(
                ANNOUNCE,
                content=content,
                headers={"content-type": content_type, **headers},
                auth=None,
            )
            answers.append((r.status_code, r.headers["content-type"], r.json()))
        took = is_object(content)
        assert (s.counts.answered, s.counts.handed_on) == (int(took), int(not took))
    assert without_skew(answers[0]) == without_skew(answers[1])
    assert answers[0][0] == status, answers[0]


async def test_a_new_node_is_written_before_its_answer_and_listed(tmp_path: Path) -> None:
    """The first announce of a node waits for its row (the lane's task); the node is then
    listed online, and its next announces are answered at once."""
    async with served(tmp_path) as s:
        for free in (10**9, 10**9, 2 * 10**9):  # new, same, changed (its row is written again)
            content = json.dumps(body(node("a", free=free))).encode()
            r = await s.client.post(
                ANNOUNCE, content=content, headers={"content-type": LANE, **sign(content)}
            )
            assert r.status_code == 200, r.text
        assert s.counts.answered == 3
        r = await s.client.get("/v1/nodes", params={"online": "true"})
        assert r.status_code == 200, r.text
        listed = {n["node_id"]: n for n in r.json()["items"]}
        assert listed[nid("a")]["free_bytes"] == 2 * 10**9


async def test_each_request_counts_once_against_one_rate(tmp_path: Path) -> None:
    """With a burst of 3: an announce the lane answers, one it hands on to the app (its body is
    a JSON list), and a read through the app pass; the next announce gets the gate's 429. The
    lane and the middleware share one count per source, and a handed-on request is counted
    once (counted twice, or in two tables, the fourth would pass or the third be refused)."""
    async with served(tmp_path, limits=ServerLimits(rate=0.01, burst=3)) as s:
        got = []
        for content in (good(), b"[1, 2]", None, good()):
            if content is None:
                r = await s.client.get("/v1/health")
            else:
                r = await s.client.post(
                    ANNOUNCE, content=content, headers={"content-type": LANE, **sign(content)}
                )
            got.append(r.status_code)
        assert got == [200, 422, 200, 429]
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/problem+json"
        assert (s.counts.answered, s.counts.handed_on) == (2, 1)


def request_bytes(content: bytes, *, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    headers = [("host", "tracker"), ("content-type", LANE), ("content-length", str(len(content)))]
    headers += list(sign(content).items()) + list(extra)
    head = f"POST {ANNOUNCE} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode() + b"\r\n" + content


def fake_client_cycle(conn: h11.Connection) -> None:
    """Put a client-side h11 connection in the state of having sent a request."""
    conn.send(h11.Request(method="POST", target=ANNOUNCE, headers=[("host", "t")]))
    conn.send(h11.EndOfMessage())


async def test_pipelined_announces_on_one_connection_are_answered_in_order(
    tmp_path: Path,
) -> None:
    """Three announces written at once, then a detail read: four answers in order on the
    same connection, the announces by the lane."""
    async with served(tmp_path) as s:
        reader, writer = await asyncio.open_connection(s.host, s.port)
        try:
            first = good()
            r = await s.client.post(
                ANNOUNCE, content=first, headers={"content-type": LANE, **sign(first)}
            )
            assert r.status_code == 200, r.text  # the node is known: the rest need no write
            wire = b"".join(request_bytes(good()) for _ in range(3))
            wire += b"GET /v1/files/" + b"0" * 64 + b" HTTP/1.1\r\nhost: tracker\r\n\r\n"
            writer.write(wire)
            await writer.drain()
            got = await read_responses_in_order(reader, 4)
        finally:
            writer.close()
            await writer.wait_closed()
    assert [status for status, _ in got] == [200, 200, 200, 404]
    assert json.loads(got[0][1])["heartbeat_interval"] == 30.0
    assert s.counts.answered == 4


async def read_responses_in_order(
    reader: asyncio.StreamReader, count: int
) -> list[tuple[int, bytes]]:
    conn = h11.Connection(h11.CLIENT)
    got: list[tuple[int, bytes]] = []
    for _ in range(count):
        fake_client_cycle(conn)
        status, content = 0, b""
        async with asyncio.timeout(10):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    content += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(f"unexpected {event!r}")
        got.append((status, content))
        conn.start_next_cycle()
    return got


async def test_connection_close_is_kept_and_chunked_bodies_go_through_asgi(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as s:
        first = good()
        r = await s.client.post(
            ANNOUNCE, content=first, headers={"content-type": LANE, **sign(first)}
        )
        assert r.status_code == 200, r.text
        answered = s.counts.answered

        # a request asking to close: answered, said so, and the connection closed
        reader, writer = await asyncio.open_connection(s.host, s.port)
        try:
            writer.write(request_bytes(good(), extra=(("connection", "close"),)))
            await writer.drain()
            async with asyncio.timeout(10):
                raw = await reader.read()  # up to EOF: the server closed the connection
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, content = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in head.lower()
        assert json.loads(content)["heartbeat_interval"] == 30.0
        assert s.counts.answered == answered + 1

        # a chunked body: not the lane's (no declared length), answered by the app
        content = good()

        async def pieces() -> AsyncIterator[bytes]:
            yield content[:10]
            yield content[10:]

        r = await s.client.post(
            ANNOUNCE, content=pieces(), headers={"content-type": LANE, **sign(content)}
        )
        assert r.status_code == 200, r.text
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert (s.counts.answered, s.counts.handed_on) == (answered + 1, 0)


async def test_a_connection_paused_for_writing_meets_the_asgi_back_pressure(
    tmp_path: Path,
) -> None:
    """While the transport is paused for writing (a client not reading its answers), an
    announce goes through the ASGI cycle, whose answer waits for the transport to drain."""
    async with served(tmp_path) as s:
        reader, writer = await asyncio.open_connection(s.host, s.port)
        try:
            writer.write(request_bytes(good()))  # the node becomes known, by the lane
            await writer.drain()
            assert [status for status, _ in await read_responses_in_order(reader, 1)] == [200]
            assert s.counts.answered == 1
            (protocol,) = s.server.server_state.connections
            protocol.flow.pause_writing()  # what the transport calls past its high-water mark
            writer.write(request_bytes(good()))
            await writer.drain()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await reader.read(1)  # no answer while paused
            assert s.counts.answered == 1  # not the lane's
            protocol.flow.resume_writing()
            got = await read_responses_in_order(reader, 1)
        finally:
            writer.close()
            await writer.wait_closed()
    assert [status for status, _ in got] == [200]
