"""Tracker under load: announces and file-detail reads (a figure, not a test).

usage: python bench/tracker_load.py [--nodes 64] [--readers 16] [--duration 10] [--warmup 2]
                                    [--files 200] [--chunks 16] [--replicas 3] [--no-tls]
       python bench/tracker_load.py --url URL --seconds S --concurrency C
                                    --kind announce|detail [--protocol p2pshare|bittorrent]
                                    [--ids FILE] [--info-hash HEX] [--json]

Without ``--url``: starts a real ``p2pshare tracker`` process (the harness of
``tests/integration/network``; TLS unless ``--no-tls``) on a SQLite file in a temp dir,
announces ``--nodes`` nodes and registers ``--files`` files of ``--chunks`` chunks (each chunk
on ``--replicas`` nodes), all signed. Then, for ``--warmup`` + ``--duration`` seconds, runs
``--nodes`` simulated nodes that announce back to back (closed loop, one connection each: the
worst case, every node announcing as fast as the tracker answers, not every 30 s) and
``--readers`` clients that read ``GET /v1/files/{id}`` of random files, at once. Prints
requests/s and p50/p99/max latency for each kind, counted after the warm-up only.

With ``--url``: one kind of load against a tracker that is already running, for
``bench/suite.py`` (and for ``bench/anchors.py``, which runs it inside a network namespace
against opentracker): ``--concurrency`` clients in a closed loop for ``--seconds``, after one
untimed request per client (which opens its connection and, for p2pshare announces, makes the
node known). ``--protocol p2pshare`` sends our signed JSON announces (``POST
/v1/nodes/announce``, each client a node with its own Ed25519 key, every request signed anew,
the signatures for up to ``PRESIGN_RATE`` announces a second made before the timing starts)
or reads file details (of the ids in ``--ids``, else of the first page of ``GET /v1/files``);
``--protocol bittorrent`` sends BitTorrent HTTP announces (``GET /announce?info_hash=...``,
each client its own peer id, all for one info hash). ``--json`` prints one line ``{"rps",
"p50_ms", "p99_ms", "max_ms", "requests", "errors", ...}``. An https URL is read without
checking the certificate (the pin after ``#`` is dropped). The client runs in one process
with asyncio, on the same machine as the tracker: on 2 cores it takes CPU from the tracker and
caps what a fast tracker can show, the same cap for every tracker measured. So the timed
requests go through :class:`Connection`, a bare HTTP/1.1 keep-alive client writing requests
built before the timing starts (about a fifth of aiohttp's CPU per request), each client from
a loopback address of its own (:func:`connections`: from one address the simulated nodes
together would meet the tracker's per-address rate limit); the setup (announcing the nodes,
registering files, listing ids) uses aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_from_bytes, urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pshare.core.manifest import ManifestBuilder
from p2pshare.core.messages import ChunkAck, FileRegistration, NodeAnnounce, Placement
from p2pshare.security.keys import KeyPair
from p2pshare.security.signing import body_sha256, sign_request

CHUNK = 64 * 1024
KINDS = ("announce", "detail")
PROTOCOLS = ("p2pshare", "bittorrent")
BENCH_INFO_HASH = hashlib.sha1(b"p2pshare-bench-0").hexdigest()
"""The info hash of every BitTorrent announce (a tracker with a whitelist must list it; it is
the first of ``bench/anchors.py``'s ``bench_info_hashes``)."""
ANNOUNCE_PATH = "/v1/nodes/announce"
PRESIGN_RATE = 10_000
"""Announces a second the signatures made before a timed ``--url`` run cover (past that,
each is signed as it is sent)."""
HERE = Path(__file__).resolve()


# --- what the clients send -------------------------------------------------------------------


def node_keys(count: int, seed: str = "bench") -> list[KeyPair]:
    """Return ``count`` Ed25519 key pairs derived from ``seed`` (the same in every run)."""
    return [
        KeyPair.of(
            Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}-{i}".encode()).digest())
        )
        for i in range(count)
    ]


def announce_of(key: KeyPair, i: int) -> NodeAnnounce:
    """Return the announce of simulated node ``i`` (``key``'s node) on a made-up address."""
    offered = 100 * 2**30
    used = random.Random(i).randrange(0, offered // 2)
    return NodeAnnounce(
        node_id=key.node_id,
        name=f"bench node {i}",
        address=f"http://127.0.0.1:{10000 + i}",
        offered_bytes=offered,
        used_bytes=used,
        free_bytes=offered - used,
    )


def registration(f: int, chunks: int, holders: Sequence[str], replicas: int) -> FileRegistration:
    """Return the registration of bench file ``f`` (``chunks`` chunks of 64 KiB of random
    bytes, each on ``replicas`` of ``holders``), owned by ``holders[0]``."""
    rng = random.Random(f)
    builder = ManifestBuilder(CHUNK)
    for _ in range(chunks):
        builder.add_chunk(rng.randbytes(CHUNK))
    m = builder.finish(f"bench-{f:06d}.bin", datetime(2030, 1, 1, tzinfo=UTC))
    placement, acks = [], []
    for cid in m.chunk_ids:
        on = rng.sample(list(holders), replicas)
        placement.append(Placement(chunk_id=cid, holders=on))
        acks += [ChunkAck(node_id=h, chunk_id=cid, size=CHUNK) for h in on]
    return FileRegistration(
        manifest=m, owner=holders[0], replica_target=replicas, placement=placement, acks=acks
    )


def signed(key: KeyPair, method: str, target: str, body_hash: str) -> dict[str, str]:
    """Return the headers of a request signed now by ``key`` (a fresh nonce each time)."""
    return {
        "content-type": "application/json",
        **sign_request(key, method, target, body_hash, now=time.time()),
    }


def base_of(url: str) -> str:
    """Return ``url`` without its certificate pin (``#...``) and trailing slash."""
    return url.partition("#")[0].rstrip("/")


def new_session(concurrency: int) -> aiohttp.ClientSession:
    """Return a client session with one connection per client (certificates not checked)."""
    connector = aiohttp.TCPConnector(limit=concurrency + 4, ssl=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


# --- the timed requests' client ----------------------------------------------------------------

REQUEST_GRACE = 30.0
"""Seconds past the end of a timed run that a request still in flight may take (then it
fails as a timeout)."""


def connections(url: str, count: int) -> list[Connection]:
    """Return ``count`` connections to ``url``, each from its own source address when the
    server is on loopback (127.1.0.1, 127.1.0.2, ...: every address of 127/8 is this host's).

    The simulated clients are nodes of their own: from one address their requests together
    would meet the per-address rate limit (the tracker's default is 5,000/s) that no real
    node comes near."""
    host = urlsplit(base_of(url)).hostname or ""
    if not host.startswith("127."):
        return [Connection(url) for _ in range(count)]
    return [Connection(url, f"127.1.{(i + 1) // 256}.{(i + 1) % 256}") for i in range(count)]


def parse_response(buf: bytes | bytearray, closed: bool) -> tuple[int, bytes, bool, int] | None:
    """Return ``(status, body, keep_alive, consumed)`` of the first whole HTTP/1.x response in
    ``buf``, or None while it is incomplete (``closed``: no more bytes will come, so a body
    without a declared length ends here). Raise ValueError when it is not a response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if closed:
            raise ValueError("the connection closed before a whole response head")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    length: int | None = None
    keep = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            if not value.isdigit():
                raise ValueError(f"bad content-length: {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not read by this client")
        elif name == b"connection":
            keep = b"keep-alive" in value if version == b"HTTP/1.0" else b"close" not in value
    start = end + 4
    if length is None:
        if not closed:
            return None
        return int(code), bytes(buf[start:]), False, len(buf)
    if len(buf) < start + length:
        if closed:
            raise ValueError("the connection closed inside a response body")
        return None
    return int(code), bytes(buf[start : start + length]), keep and not closed, start + length


class _Answers(asyncio.Protocol):
    """One connection's bytes: completes :attr:`waiter` with each whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._check()

    def eof_received(self) -> bool:
        self.closed = True
        self._check()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._check()

    def _check(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.closed and not self.buf:
            waiter.set_exception(_Closed("the server closed the connection without answering"))
            return
        try:
            got = parse_response(self.buf, self.closed)
        except ValueError as exc:
            waiter.set_exception(ConnectionError(str(exc)))
            return
        if got is not None:
            status, body, keep, used = got
            del self.buf[:used]
            waiter.set_result((status, body, keep))


class _Closed(ConnectionError):
    """The connection ended before any byte of an answer."""


class Connection:
    """A bare HTTP/1.1 client of one server: one connection at a time, kept alive while the
    server keeps it (a new one when it closes), whole requests written as given.

    aiohttp's client spent about 180 us of CPU per announce here, as much as the tracker it
    measured; this one writes bytes built before the timing and reads the status line, the
    length and the body. It is bounded by the caller (:func:`closed_loop` runs under a
    timeout)."""

    def __init__(self, url: str, source: str | None = None) -> None:
        parts = urlsplit(base_of(url))
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":  # the certificate is not checked (see the module's doc)
            self.ssl = ssl.create_default_context()
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        self.authority = parts.netloc.encode()
        self.source = None if source is None else (source, 0)
        """the local address the connections come from (``None``: the system's choice)"""
        self._answers: _Answers | None = None

    def head(self, method: str, target: str, headers: dict[str, str], length: int = 0) -> bytes:
        """Return a request's head for this server (``Host`` and ``Content-Length`` added)."""
        lines = [f"{method} {target} HTTP/1.1".encode(), b"host: " + self.authority]
        lines += [f"{k}: {v}".encode() for k, v in headers.items()]
        if method == "POST":
            lines.append(f"content-length: {length}".encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Write ``request`` (a whole request), return the answer's status and body.

        A kept-alive connection that the server closed without a word (opentracker closes
        after each answer without saying ``Connection: close``) is found out by sending on
        it: the request then goes once more, on a new connection, as HTTP clients do."""
        reused = self._answers is not None and not self._answers.closed
        try:
            return await self._exchange(request)
        except _Closed:
            if not reused:
                raise
        return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        answers = self._answers
        if answers is None or answers.closed:
            loop = asyncio.get_running_loop()
            _, answers = await loop.create_connection(
                _Answers, self.host, self.port, ssl=self.ssl, local_addr=self.source
            )
            self._answers = answers
        assert answers.transport is not None
        answers.waiter = asyncio.get_running_loop().create_future()
        answers.transport.write(request)
        try:
            status, body, keep = await answers.waiter
        except BaseException:  # a broken or cancelled exchange: the connection is not reused
            self.close()
            raise
        if not keep:
            answers.transport.close()
            self._answers = None
        return status, body

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self._answers is not None and self._answers.transport is not None:
            self._answers.transport.close()
        self._answers = None


async def announce_all(
    session: aiohttp.ClientSession, url: str, keys: Sequence[KeyPair], first: int = 0
) -> None:
    """Announce each node of ``keys`` once, signed; raise on any refusal."""
    base = base_of(url)
    for i, key in enumerate(keys, start=first):
        body = announce_of(key, i).model_dump_json().encode()
        headers = signed(key, "POST", ANNOUNCE_PATH, body_sha256(body))
        async with session.post(base + ANNOUNCE_PATH, data=body, headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"announce refused: {r.status} {await r.text()}")


async def register_all(
    session: aiohttp.ClientSession,
    url: str,
    regs: Sequence[FileRegistration],
    owner: KeyPair,
    parallel: int = 8,
) -> None:
    """Register every file of ``regs`` (owned by ``owner``) with signed POSTs,
    ``parallel`` at once; raise on any refusal."""
    base = base_of(url)
    queue = list(reversed(regs))

    async def worker() -> None:
        while queue:
            body = queue.pop().model_dump_json().encode()
            headers = signed(owner, "POST", "/v1/files", body_sha256(body))
            async with session.post(base + "/v1/files", data=body, headers=headers) as r:
                if r.status not in {200, 201}:
                    raise RuntimeError(f"registration refused: {r.status} {await r.text()}")

    async with asyncio.TaskGroup() as tg:
        for _ in range(parallel):
            tg.create_task(worker())


# --- the closed loop --------------------------------------------------------------------------


@dataclass
class Tally:
    """Latencies (seconds) of successful requests in the timed window, and failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self, seconds: float) -> dict[str, float | int | str]:
        """Return requests/s and p50/p99/max latency (ms) over ``seconds``."""
        lat = sorted(self.latencies)
        out: dict[str, float | int | str] = {
            "rps": len(lat) / seconds,
            "p50_ms": statistics.median(lat) * 1000 if lat else 0.0,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0,
            "max_ms": lat[-1] * 1000 if lat else 0.0,
            "requests": len(lat),
            "errors": self.errors,
            "seconds": seconds,
        }
        if self.first_error:
            out["first_error"] = self.first_error
        return out

    def line(self, name: str, seconds: float) -> str:
        """Return one printable line of :meth:`summary`."""
        if not self.latencies:
            return f"{name:9s} no requests ({self.errors} errors) {self.first_error}"
        s = self.summary(seconds)
        return (
            f"{name:9s} {s['rps']:8.0f} req/s   p50 {s['p50_ms']:6.1f} ms   "
            f"p99 {s['p99_ms']:6.1f} ms   max {s['max_ms']:6.1f} ms   "
            f"({s['requests']} requests, {self.errors} errors)"
        )


Request = Callable[[], Awaitable[str | None]]
"""Sends one request; returns None when it succeeded, else what went wrong."""


async def closed_loop(
    requests: Sequence[Request], tally: Tally, measure_from: float, stop_at: float
) -> None:
    """Run each of ``requests`` back to back in its own task until ``stop_at``
    (``time.perf_counter``); count those that start at or after ``measure_from``. A request
    still unanswered :data:`REQUEST_GRACE` seconds after ``stop_at`` ends its client, counted
    as a failure."""

    async def client(send: Request) -> None:
        try:
            async with asyncio.timeout(stop_at - time.perf_counter() + REQUEST_GRACE):
                while (now := time.perf_counter()) < stop_at:
                    try:
                        problem = await send()
                    except (aiohttp.ClientError, OSError) as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                    done = time.perf_counter()
                    if now < measure_from:
                        continue
                    if problem is None:
                        tally.latencies.append(done - now)
                    else:
                        tally.errors += 1
                        tally.first_error = tally.first_error or problem[:200]
        except TimeoutError:
            tally.errors += 1
            tally.first_error = tally.first_error or f"no answer {REQUEST_GRACE:g} s after the end"

    async with asyncio.TaskGroup() as tg:
        for send in requests:
            tg.create_task(client(send))


def p2pshare_announcers(
    conns: Sequence[Connection], keys: Sequence[KeyPair], first: int = 0, presigned: int = 0
) -> list[Request]:
    """Return one request maker per key, each on its connection of ``conns``: a signed
    announce of that node (a fresh signature, time and nonce per request; the body and its
    hash are made once).

    With ``presigned``, each node signs that many requests now and sends those first (then
    signs each as it goes): the signing is the simulated nodes' work, done on their own
    machines in a real network, so it is kept out of the timed window that the tracker shares
    this machine's cores with. The signatures stay valid for the tracker's 60 s window."""

    def maker(conn: Connection, key: KeyPair, i: int) -> Request:
        body = announce_of(key, i).model_dump_json().encode()
        digest = body_sha256(body)

        def request() -> bytes:
            headers = signed(key, "POST", ANNOUNCE_PATH, digest)
            return conn.head("POST", ANNOUNCE_PATH, headers, len(body)) + body

        ready = [request() for _ in range(presigned)]

        async def send() -> str | None:
            status, _ = await conn.send(ready.pop() if ready else request())
            return None if status == 200 else f"HTTP {status}"

        return send

    return [maker(c, k, i) for c, (i, k) in zip(conns, enumerate(keys, start=first), strict=True)]


def p2pshare_readers(conns: Sequence[Connection], ids: Sequence[str]) -> list[Request]:
    """Return one request maker per connection of ``conns``, each reading the detail of a
    random file of ``ids``."""

    def maker(conn: Connection, seed: int) -> Request:
        pick = random.Random(seed)
        gets = {i: conn.head("GET", f"/v1/files/{i}", {}) for i in ids}

        async def send() -> str | None:
            status, _ = await conn.send(gets[pick.choice(ids)])
            return None if status == 200 else f"HTTP {status}"

        return send

    return [maker(c, j) for j, c in enumerate(conns)]


def bittorrent_announcers(
    conns: Sequence[Connection], url: str, info_hash: str = BENCH_INFO_HASH
) -> list[Request]:
    """Return one request maker per connection of ``conns``, each a BitTorrent peer announcing
    ``info_hash`` to the tracker at ``url`` (its announce URL; ``/announce`` is added to a bare
    base URL)."""
    path = urlsplit(base_of(url)).path
    if not path.endswith("announce"):
        path += "/announce"
    ih = quote_from_bytes(bytes.fromhex(info_hash), safe="")

    def maker(conn: Connection, i: int) -> Request:
        peer_id = quote_from_bytes(b"-PB0001-" + f"{i:012d}".encode(), safe="")
        target = (
            f"{path}?info_hash={ih}&peer_id={peer_id}&port={20000 + i}"
            "&uploaded=0&downloaded=0&left=0&compact=1"
        )
        request = conn.head("GET", target, {})

        async def send() -> str | None:
            status, body = await conn.send(request)
            if status != 200:
                return f"HTTP {status}"
            if b"failure reason" in body:
                return body.decode(errors="replace")
            return None

        return send

    return [maker(c, i) for i, c in enumerate(conns)]


async def list_file_ids(session: aiohttp.ClientSession, url: str) -> list[str]:
    """Return the ids of the first page (500) of files the tracker lists."""
    async with session.get(f"{base_of(url)}/v1/files", params={"limit": "500"}) as r:
        r.raise_for_status()
        return [f["file_id"] for f in (await r.json())["items"]]


async def run_load(
    url: str,
    *,
    kind: str,
    protocol: str,
    seconds: float,
    concurrency: int,
    ids: Sequence[str] = (),
    info_hash: str = BENCH_INFO_HASH,
    seed: str = "bench",
    cpu_pid: int | None = None,
) -> dict[str, float | int | str]:
    """Run one kind of load for ``seconds`` after one untimed request per client; return
    :meth:`Tally.summary` plus what was run, the CPU this client used (cores) and, given
    ``cpu_pid`` (the tracker's process), the CPU that process used."""
    if (protocol, kind) == ("bittorrent", "detail"):
        raise ValueError("a BitTorrent tracker has no file details: use --kind announce")
    if kind == "detail" and not ids:
        async with new_session(1) as session:
            ids = await list_file_ids(session, url)
        if not ids:
            raise RuntimeError("the tracker lists no files to read")
    conns = connections(url, concurrency)
    try:
        if protocol == "bittorrent":
            requests = bittorrent_announcers(conns, url, info_hash)
        elif kind == "announce":
            each = math.ceil(PRESIGN_RATE * seconds / concurrency)
            requests = p2pshare_announcers(conns, node_keys(concurrency, seed), presigned=each)
        else:
            requests = p2pshare_readers(conns, ids)
        setup = Tally()
        for attempt in range(2):  # one request per client: connections open, nodes known
            setup = Tally()
            async with asyncio.TaskGroup() as tg:
                for send in requests:
                    tg.create_task(_once(send, setup))
            if not setup.errors:
                break
            await asyncio.sleep(0.5 * (attempt + 1))
        if setup.errors:
            raise RuntimeError(f"the untimed first requests failed: {setup.first_error}")
        tally = Tally()
        cpu0, server0 = time.process_time(), cpu_seconds(cpu_pid) if cpu_pid else 0.0
        start = time.perf_counter()
        await closed_loop(requests, tally, start, start + seconds)
        wall = time.perf_counter() - start
        cpu1, server1 = time.process_time(), cpu_seconds(cpu_pid) if cpu_pid else 0.0
    finally:
        for conn in conns:
            conn.close()
    summary = tally.summary(seconds)
    summary.update(kind=kind, protocol=protocol, concurrency=concurrency)
    summary["client_cpu_cores"] = (cpu1 - cpu0) / wall
    if cpu_pid:
        summary["server_cpu_cores"] = (server1 - server0) / wall
    return summary


async def _once(send: Request, tally: Tally) -> None:
    try:
        async with asyncio.timeout(REQUEST_GRACE):
            problem = await send()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        tally.errors += 1
        tally.first_error = tally.first_error or problem[:200]


def load(
    url: str,
    seconds: float,
    concurrency: int,
    *,
    kind: str = "announce",
    protocol: str = "bittorrent",
    ids_file: Path | None = None,
    cpu_pid: int | None = None,
    prefix: Sequence[str] = (),
    python: str = sys.executable,
) -> dict[str, float | int | str]:
    """Run this script as a subprocess (``--url ... --json``) and return what it printed.

    ``prefix`` goes before the command: ``["ip", "netns", "exec", NS]`` runs the load inside
    a network namespace (``bench/anchors.py``'s opentracker lives in one). Raises
    :class:`RuntimeError` when it fails."""
    cmd = [
        *prefix,
        python,
        str(HERE),
        "--url",
        url,
        "--seconds",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--kind",
        kind,
        "--protocol",
        protocol,
        "--json",
    ]
    if ids_file is not None:
        cmd += ["--ids", str(ids_file)]
    if cpu_pid is not None:
        cmd += ["--cpu-pid", str(cpu_pid)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tracker_load exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the standalone figure --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU time of process ``pid`` and of its live descendants (the
    tracker's signature checker; Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = int(fields[11]) + int(fields[12])
    if pid not in times:
        raise FileNotFoundError(f"no process {pid}")
    tree, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(times[p] for p in tree) / os.sysconf("SC_CLK_TCK")


async def mixed(args: argparse.Namespace, url: str, pid: int) -> None:
    """Announce, register, then run announcers and readers at once; print the figures."""
    keys = node_keys(args.nodes)
    ids = [k.node_id for k in keys]
    async with new_session(args.nodes + args.readers) as session:
        await announce_all(session, url, keys)
        regs = await asyncio.to_thread(
            lambda: [registration(f, args.chunks, ids, args.replicas) for f in range(args.files)]
        )
        t0 = time.perf_counter()
        await register_all(session, url, regs, keys[0], parallel=1)
        reg_time = time.perf_counter() - t0
        print(
            f"registered {len(regs)} files x {args.chunks} chunks x {args.replicas} replicas "
            f"in {reg_time:.2f} s ({reg_time / max(1, len(regs)) * 1000:.1f} ms each, "
            "sequential, signed)"
        )
        file_ids = [r.manifest.file_id for r in regs]
        if not args.cold:  # every file read once: the load then reads a warm catalogue
            for fid in file_ids:
                async with session.get(f"{base_of(url)}/v1/files/{fid}") as r:
                    r.raise_for_status()

        announces, reads = Tally(), Tally()
        start = time.perf_counter()
        measure_from = start + args.warmup
        stop_at = measure_from + args.duration

        async def measure_cpu() -> tuple[float, float]:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            before = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            return cpu_seconds(pid) - before[0], time.perf_counter() - before[1]

        both = connections(url, len(keys) + args.readers)
        announce_conns, read_conns = both[: len(keys)], both[len(keys) :]
        try:
            async with asyncio.TaskGroup() as tg:
                cpu_task = tg.create_task(measure_cpu())
                tg.create_task(
                    closed_loop(
                        p2pshare_announcers(announce_conns, keys),
                        announces,
                        measure_from,
                        stop_at,
                    )
                )
                tg.create_task(
                    closed_loop(
                        p2pshare_readers(read_conns, file_ids), reads, measure_from, stop_at
                    )
                )
        finally:
            for conn in announce_conns + read_conns:
                conn.close()
    cpu, wall = cpu_task.result()
    scheme = "TLS" if url.startswith("https") else "plain http"
    print(
        f"load ({scheme}): {args.nodes} announcing nodes + {args.readers} readers "
        f"({'cold' if args.cold else 'warm'} detail cache), "
        f"{args.duration:.0f} s measured after {args.warmup:.0f} s warm-up"
    )
    print(announces.line("announce", args.duration))
    print(reads.line("detail", args.duration))
    total = len(announces.latencies) + len(reads.latencies)
    print(f"{'total':9s} {total / args.duration:8.0f} req/s")
    if total:
        print(
            f"tracker process: {cpu / wall * 100:.0f}% of one core, "
            f"{cpu / total * 1e6:.0f} us CPU per request"
        )


def standalone(args: argparse.Namespace) -> None:
    """Start a tracker with the test harness and run :func:`mixed` against it."""
    sys.path.insert(0, str(HERE.parents[1]))  # the repo: the test harness
    from tests.integration.network.cluster import Cluster

    args.replicas = min(args.replicas, args.nodes)
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        c = Cluster(Path(tmp))
        try:
            extra = ("--no-tls",) if args.no_tls else ()
            url = c.start_tracker("--audit-interval", "86400", *extra, heartbeat=30.0)
            assert c.tracker is not None
            asyncio.run(mixed(args, url, c.tracker.popen.pid))
        finally:
            c.close()
        lines = (Path(tmp) / "tracker.log").read_text(errors="replace").splitlines()
    for line in lines:
        if "file detail cache" in line:
            print("tracker:", line.split(": ", 1)[1])
    if any("Traceback" in line or " ERROR " in line for line in lines):
        print("tracker log:", *lines[-20:], sep="\n  ")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="load a running tracker instead (one kind of load)")
    p.add_argument("--seconds", type=float, default=5.0, help="with --url: timed seconds")
    p.add_argument("--concurrency", type=int, default=64, help="with --url: clients")
    p.add_argument("--kind", choices=KINDS, default="announce")
    p.add_argument("--protocol", choices=PROTOCOLS, default="p2pshare")
    p.add_argument("--ids", type=Path, help="with --url --kind detail: file ids, one a line")
    p.add_argument("--info-hash", default=BENCH_INFO_HASH, help="with --protocol bittorrent")
    p.add_argument("--seed", default="bench", help="with --url: seed of the nodes' keys")
    p.add_argument("--json", action="store_true", help="with --url: print one JSON line")
    p.add_argument("--cpu-pid", type=int, help="with --url: also report this process's CPU")
    p.add_argument("--nodes", type=int, default=64)
    p.add_argument("--readers", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--no-tls", action="store_true", help="serve plain http (standalone)")
    p.add_argument(
        "--cold", action="store_true", help="do not read every file once before the load"
    )
    args = p.parse_args()
    if args.url is None:
        standalone(args)
        return
    ids = args.ids.read_text().split() if args.ids else ()
    try:
        result = asyncio.run(
            run_load(
                args.url,
                kind=args.kind,
                protocol=args.protocol,
                seconds=args.seconds,
                concurrency=args.concurrency,
                ids=ids,
                info_hash=args.info_hash,
                seed=args.seed,
                cpu_pid=args.cpu_pid,
            )
        )
    except (RuntimeError, ValueError, aiohttp.ClientError, OSError) as exc:
        raise SystemExit(f"tracker_load: {exc}") from None
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.protocol} {args.kind}: " + ", ".join(f"{k} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
