"""Hostile clients against the real tracker and node processes, over raw sockets.

Each case sends what a well-behaved client never would (a 10 MB header, a 10 GB declared
body, a path that climbs out of the chunk store, a request or a body a byte at a time, a flood
of requests or connections) and checks that it is refused or cut off in bounded time, and
that the service goes on answering others. The servers run with short deadlines (2 s) so the
slow cases stay short.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, closing
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pshare.security.keys import KeyPair
from p2pshare.security.signing import body_sha256, sign_request
from tests.integration.network.cluster import Cluster, Node, plain

pytestmark = pytest.mark.timeout(60)

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SLACK = 4.0
"""Seconds allowed beyond a deadline (a busy machine, aiohttp's lingering read)."""
QUOTA = 8 * 2**20
TEN_GB = 10 * 2**30
UNKNOWN_CHUNK = "ab" * 32


# -- raw connections --------------------------------------------------------------------------


def raw_connect(address: str, timeout: float = 5.0) -> socket.socket:
    """Return a connected socket to ``address`` (``http://H:P``, or ``https://H:P#PIN``, then
    wrapped in TLS without verifying the certificate: these tests attack, they do not trust)."""
    url = urllib.parse.urlsplit(address.partition("#")[0])
    assert url.hostname is not None and url.port is not None, address
    sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
    if url.scheme != "https":
        return sock
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        return ctx.wrap_socket(sock)
    except BaseException:
        sock.close()
        raise


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; return False when the server has closed the connection."""
    try:
        sock.sendall(data)
    except (OSError, ssl.SSLError):
        return False
    return True


def read_reply(sock: socket.socket, timeout: float) -> bytes:
    """Return what the server sends within ``timeout`` until it closes (b"": it only closed,
    or reset). Raises AssertionError if it neither answers nor closes in time."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            break
        except (OSError, ssl.SSLError):
            return data
        if not piece:
            return data
        data += piece
        if b"\r\n\r\n" in data and _complete(data):
            return data
    if data:
        return data
    raise AssertionError(f"the server neither answered nor closed within {timeout} s")


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def status_of(reply: bytes) -> int | None:
    """Return the status code of a raw reply (None when there was none)."""
    if not reply.startswith(b"HTTP/1."):
        return None
    return int(reply.split(b" ", 2)[1])


def request_head(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_request(address: str, head: bytes, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send one request on a fresh connection; return the reply."""
    with closing(raw_connect(address)) as sock:
        send_quietly(sock, head + body)
        return read_reply(sock, timeout)


def dribble_until_closed(sock: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send ``data`` a byte every ``every`` seconds until the server closes the connection
    (or answers it); return the seconds that took (at most ``limit``)."""
    started = time.monotonic()
    for i in range(len(data)):
        if not send_quietly(sock, data[i : i + 1]):
            break
        sock.settimeout(every)
        try:
            sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            pass  # nothing yet: go on
        except (OSError, ssl.SSLError):
            break  # reset
        else:
            break  # an answer (408), or b"": the server is done with this connection
        if time.monotonic() - started > limit:
            break
    return time.monotonic() - started


# -- the services -----------------------------------------------------------------------------


def tracker_answers(net: Cluster) -> None:
    r = httpx.get(plain(net.tracker_url, "/v1/health"), verify=False, timeout=10)
    assert r.status_code == 200, r.text


def node_answers(node: Node) -> None:
    r = httpx.get(plain(node.address, f"/v1/chunks/{UNKNOWN_CHUNK}"), verify=False, timeout=10)
    assert r.status_code == 404, r.text
    assert r.json()["type"] == "urn:p2pshare:not-found"


def still_answers(net: Cluster, which: str) -> None:
    if which == "tracker":
        tracker_answers(net)
    else:
        node_answers(net.nodes["n1"])


def address_of(net: Cluster, which: str) -> str:
    return net.tracker_url if which == "tracker" else net.nodes["n1"].address


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A tracker and one node with short head and body deadlines and the default rates."""
    c = Cluster(
        tmp_path_factory.mktemp("hostile"),
        env={
            "P2PSHARE_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "P2PSHARE_BODY_TIMEOUT": str(BODY_TIMEOUT),
        },
    )
    try:
        c.start_tracker()
        c.start_node("n1", "8MiB")
        c.wait_online(1)
        yield c
    finally:
        c.close()


# -- signed requests to the node --------------------------------------------------------------


@pytest.fixture(scope="module")
def peer() -> KeyPair:
    """A node key of our own, so requests to the holder get past its signature check."""
    return KeyPair.of(Ed25519PrivateKey.generate())


def signed(peer: KeyPair, method: str, target: str, digest: str) -> dict[str, str]:
    return sign_request(peer, method, target, digest, now=time.time())


def reserve(node: Node, peer: KeyPair, nbytes: int, client: httpx.Client | None = None) -> Any:
    """Ask ``node`` for ``nbytes`` as ``peer``; return the response."""
    body = json.dumps(
        {
            "requester": peer.node_id,
            "upload_id": f"hostile-{time.monotonic_ns()}-{threading.get_ident()}",
            "nbytes": nbytes,
            "ttl": 60,
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    headers |= signed(peer, "POST", "/v1/reservations", body_sha256(body))
    url = plain(node.address, "/v1/reservations")
    if client is not None:
        return client.post(url, content=body, headers=headers)
    return httpx.post(url, content=body, headers=headers, verify=False, timeout=10)


def release(node: Node, peer: KeyPair, reservation_id: str) -> None:
    target = f"/v1/reservations/{reservation_id}"
    headers = signed(peer, "DELETE", target, body_sha256(b""))
    r = httpx.delete(plain(node.address, target), headers=headers, verify=False, timeout=10)
    assert r.status_code == 204, r.text


def push_head(peer: KeyPair, chunk_id: str, reservation_id: str, length: int) -> bytes:
    target = f"/v1/chunks/{chunk_id}?reservation={reservation_id}"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    return request_head("PUT", target, headers | signed(peer, "PUT", target, chunk_id))


# -- huge headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tracker", "node"])
def test_a_10_mb_header_is_refused(net: Cluster, which: str) -> None:
    with closing(raw_connect(address_of(net, which))) as sock:
        sent_all = send_quietly(sock, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * 2**20
        for _ in range(10):
            sent_all = sent_all and send_quietly(sock, piece)
        sent_all = sent_all and send_quietly(sock, b"\r\n\r\n")
        reply = read_reply(sock, timeout=10)
    status = status_of(reply)
    if status is None:  # no answer: the connection must have been closed on us
        assert reply == b"" or not sent_all, reply[:200]
    else:
        assert 400 <= status < 500, reply[:200]
    still_answers(net, which)


# -- huge declared bodies ---------------------------------------------------------------------


def test_the_tracker_refuses_a_declared_10_gb_body_before_reading(net: Cluster) -> None:
    head = request_head(
        "POST",
        "/v1/nodes/announce",
        {"Content-Type": "application/json", "Content-Length": str(TEN_GB)},
    )
    started = time.monotonic()
    reply = raw_request(net.tracker_url, head)
    assert status_of(reply) == 413, reply[:300]
    assert time.monotonic() - started < SLACK
    tracker_answers(net)


def test_the_node_refuses_a_declared_10_gb_json_body_before_reading(net: Cluster) -> None:
    head = request_head(
        "POST",
        "/v1/reservations",
        {"Content-Type": "application/json", "Content-Length": str(TEN_GB)},
    )
    started = time.monotonic()
    reply = raw_request(net.nodes["n1"].address, head)
    assert status_of(reply) == 413, reply[:300]
    assert b"urn:p2pshare:payload-too-large" in reply
    assert time.monotonic() - started < SLACK
    node_answers(net.nodes["n1"])


def test_the_node_refuses_a_push_larger_than_its_limits_before_reading(
    net: Cluster, peer: KeyPair
) -> None:
    n1 = net.nodes["n1"]
    r = reserve(n1, peer, 2**20)
    assert r.status_code == 201, r.text
    reservation_id = r.json()["reservation_id"]
    try:
        cases = [
            (TEN_GB, 413, b"urn:p2pshare:payload-too-large"),  # above any chunk
            (2**20 + 1, 409, b"urn:p2pshare:reservation-error"),  # above the reservation
        ]
        for length, status, kind in cases:
            started = time.monotonic()
            reply = raw_request(n1.address, push_head(peer, UNKNOWN_CHUNK, reservation_id, length))
            assert status_of(reply) == status, reply[:300]
            assert kind in reply
            assert time.monotonic() - started < SLACK
        assert not n1.chunk_path(UNKNOWN_CHUNK).exists()
    finally:
        release(n1, peer, reservation_id)
    node_answers(n1)


# -- ids that climb out of the store ----------------------------------------------------------


TRAVERSALS = [
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fcanary",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fcanary",
    "%2E%2E/%2E%2E/%2E%2E/canary",
    "..%5c..%5c..%5ccanary",
    "%252e%252e%252fcanary",
]


def test_chunk_ids_with_paths_are_refused_and_touch_no_file(net: Cluster, peer: KeyPair) -> None:
    n1 = net.nodes["n1"]
    secret = f"canary {time.time_ns()}".encode()
    places = [
        net.root / "canary",
        n1.data_dir / "canary",
        n1.data_dir / "chunks" / "canary",
        net.root.parent / "canary",
    ]
    for place in places:
        place.write_bytes(secret)
    try:
        for bad in TRAVERSALS:
            target = f"/v1/chunks/{bad}"
            reply = raw_request(n1.address, request_head("GET", target))
            status = status_of(reply)
            assert status is not None and 400 <= status < 500, (bad, reply[:300])
            assert secret not in reply and b"root:" not in reply, bad
            # a push of "new" bytes to the same place
            body = b"pwned" * 10
            put = f"{target}?reservation=abc"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": "50"}
            headers |= signed(peer, "PUT", put, hashlib.sha256(body).hexdigest())
            head = request_head("PUT", put, headers)
            reply = raw_request(n1.address, head, body)
            status = status_of(reply)
            assert status is not None and 400 <= status < 500, (bad, reply[:300])
        for place in places:
            assert place.read_bytes() == secret, place
        files = [p for p in net.root.rglob("*") if p.is_file() and p.suffix != ".log"]
        pwned = [p for p in files if b"pwned" in p.read_bytes()]
        assert pwned == []
        for bad in TRAVERSALS[:3]:
            reply = raw_request(net.tracker_url, request_head("GET", f"/v1/files/{bad}"))
            status = status_of(reply)
            assert status is not None and 400 <= status < 500, (bad, reply[:300])
    finally:
        for place in places:
            place.unlink(missing_ok=True)
    node_answers(n1)
    tracker_answers(net)


# -- slow senders -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tracker", "node"])
def test_a_slow_loris_head_is_cut_off(net: Cluster, which: str) -> None:
    """A head sent a byte every 0.25 s, never finished: closed after the head deadline."""
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    with closing(raw_connect(address_of(net, which))) as sock:
        took = dribble_until_closed(sock, head, every=0.25, limit=HEADER_TIMEOUT + 3 * SLACK)
    assert HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + SLACK, f"cut off after {took:.1f} s"
    still_answers(net, which)


@pytest.mark.parametrize("which", ["tracker", "node"])
def test_a_connection_that_sends_nothing_is_closed(net: Cluster, which: str) -> None:
    with closing(raw_connect(address_of(net, which))) as sock:
        started = time.monotonic()
        assert read_reply(sock, timeout=HEADER_TIMEOUT + SLACK) == b""
        assert time.monotonic() - started >= HEADER_TIMEOUT - 0.5
    still_answers(net, which)


def test_the_tracker_keeps_an_idle_connection_past_its_head_deadline_yet_cuts_a_slow_head(
    net: Cluster,
) -> None:
    """Heads are due in 2 s here, yet an idle kept-alive connection is kept longer (at least
    20 s: longer than the nodes keep theirs, so none of their calls meets a connection closed
    as it is sent); the next head is then due 2 s after its first byte, not after the idle
    time. (A node's peer API cannot tell these apart: aiohttp's one timer does both.)"""
    health = request_head("GET", "/v1/health")
    with closing(raw_connect(net.tracker_url)) as sock:
        assert send_quietly(sock, health)
        assert status_of(read_reply(sock, timeout=10)) == 200
        time.sleep(HEADER_TIMEOUT + 2)  # idle past the head deadline
        assert send_quietly(sock, health)
        assert status_of(read_reply(sock, timeout=10)) == 200, "closed while idle"
        time.sleep(HEADER_TIMEOUT + 2)
        took = dribble_until_closed(sock, health, every=0.25, limit=HEADER_TIMEOUT + 3 * SLACK)
    assert HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + SLACK, f"cut off after {took:.1f} s"


@pytest.mark.parametrize("which", ["tracker", "node"])
def test_a_dribbled_json_body_is_cut_off(net: Cluster, which: str) -> None:
    target = "/v1/nodes/announce" if which == "tracker" else "/v1/reservations"
    head = request_head(
        "POST", target, {"Content-Type": "application/json", "Content-Length": "1000"}
    )
    with closing(raw_connect(address_of(net, which))) as sock:
        assert send_quietly(sock, head)
        took = dribble_until_closed(sock, b"{" * 1000, every=0.25, limit=BODY_TIMEOUT + 3 * SLACK)
    assert took <= BODY_TIMEOUT + SLACK, f"cut off after {took:.1f} s"
    still_answers(net, which)


def test_a_dribbled_chunk_push_is_cut_off(net: Cluster, peer: KeyPair) -> None:
    n1 = net.nodes["n1"]
    r = reserve(n1, peer, 2**20)
    assert r.status_code == 201, r.text
    reservation_id = r.json()["reservation_id"]
    try:
        body = b"x" * 4096
        head = push_head(peer, hashlib.sha256(body).hexdigest(), reservation_id, len(body))
        with closing(raw_connect(n1.address)) as sock:
            assert send_quietly(sock, head + body[:100])
            took = dribble_until_closed(sock, body[100:], every=0.25, limit=3 * SLACK)
        assert took <= BODY_TIMEOUT + SLACK, f"cut off after {took:.1f} s"
        assert not n1.chunk_path(hashlib.sha256(body).hexdigest()).exists()
        assert net.status(n1)["used_bytes"] == 0
    finally:
        release(n1, peer, reservation_id)
    node_answers(n1)


# -- quotas under concurrent reservations -----------------------------------------------------


def test_concurrent_reservations_never_exceed_the_quota(net: Cluster, peer: KeyPair) -> None:
    n1 = net.nodes["n1"]
    asks, size = 40, 2**20  # 40 MiB asked of 8 MiB, all at once
    barrier = threading.Barrier(asks)
    results: list[Any] = [None] * asks

    def ask(i: int) -> None:
        with httpx.Client(verify=False, timeout=20) as client:
            client.get(plain(n1.address, f"/v1/chunks/{UNKNOWN_CHUNK}"))  # connect first
            barrier.wait(timeout=20)
            results[i] = reserve(n1, peer, size, client)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(asks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    granted = [r.json() for r in results if r is not None and r.status_code == 201]
    refused = [r for r in results if r is not None and r.status_code != 201]
    try:
        assert len(granted) + len(refused) == asks
        assert sum(g["nbytes"] for g in granted) <= QUOTA
        assert len(granted) == QUOTA // size  # the space is all given, and no more
        assert {r.json()["type"] for r in refused} == {"urn:p2pshare:quota-exceeded"}
        status = net.status(n1)
        assert status["reserved_bytes"] + status["used_bytes"] <= QUOTA
    finally:
        for g in granted:
            release(n1, peer, g["reservation_id"])
    node_answers(n1)


# -- floods of requests and connections -------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A tracker and a node with a low request rate and connection cap."""
    c = Cluster(
        tmp_path_factory.mktemp("tight"),
        env={
            "P2PSHARE_RATE_LIMIT": "20",
            "P2PSHARE_RATE_BURST": "20",
            "P2PSHARE_MAX_CONNECTIONS": "4",
            "P2PSHARE_HEADER_TIMEOUT": "15",
        },
    )
    try:
        c.start_tracker()
        c.start_node("n1", "8MiB")
        yield c
    finally:
        c.close()


@pytest.mark.parametrize("which", ["tracker", "node"])
def test_a_flood_from_one_address_gets_429_with_retry_after(tight: Cluster, which: str) -> None:
    url = (
        plain(tight.tracker_url, "/v1/health")
        if which == "tracker"
        else plain(tight.nodes["n1"].address, f"/v1/chunks/{UNKNOWN_CHUNK}")
    )
    with httpx.Client(verify=False, timeout=10) as client:
        replies = [client.get(url) for _ in range(80)]
        limited = [r for r in replies if r.status_code == 429]
        assert limited, [r.status_code for r in replies]
        assert {r.status_code for r in replies} <= {200, 404, 429}
        first = limited[0]
        assert first.headers["content-type"] == "application/problem+json"
        assert first.json()["type"] == "urn:p2pshare:too-many-requests"
        wait = int(first.headers["retry-after"])
        assert 1 <= wait <= 2
        time.sleep(wait)
        assert client.get(url).status_code in (200, 404)


@pytest.mark.parametrize("which", ["tracker", "node"])
def test_connections_past_the_cap_get_503(tight: Cluster, which: str) -> None:
    address = tight.tracker_url if which == "tracker" else tight.nodes["n1"].address
    url = plain(address, "/v1/health" if which == "tracker" else f"/v1/chunks/{UNKNOWN_CHUNK}")
    time.sleep(1.5)  # the flood test's tokens come back
    with ExitStack() as held:
        for _ in range(4):
            held.enter_context(closing(raw_connect(address)))
        time.sleep(0.3)
        r = httpx.get(url, verify=False, timeout=10)
        assert r.status_code == 503, r.text
    deadline = time.monotonic() + 10
    while True:  # the server sees the held connections close
        r = httpx.get(url, verify=False, timeout=10)
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code in (200, 404), r.text
