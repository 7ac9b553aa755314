"""Chunk bodies over blocking sockets in worker threads: :class:`StreamPool`.

A chunk is megabytes; on the event loop each socket read of it is a callback, a TLS record
decrypted on the loop's thread and a copy out of a stream buffer, and a downloading node spent
most of one core on that. Here a worker thread reads the body straight into the caller's buffer
(``recv_into``) and hashes it as it lands. Socket reads, TLS decryption and SHA-256 all release
the GIL, so the work of several chunks runs on several cores at once while the loop stays free.

Connections are kept alive per address and reused (a few idle ones per address, dropped after
:data:`IDLE_SECONDS`). Every request has a connect timeout and a read timeout (silence), like
the aiohttp calls of :mod:`p2pshare.node.http`; a request that was waiting is aborted by
shutting its socket, so a cancelled fetch frees its thread at once. A reused connection that
the other side had closed meanwhile is retried once on a fresh one: a fetch, and a push whose
source can be sent again from its start (bytes, or a store reader that can ``rewind``).

Addresses carry their certificate pin (:func:`p2pshare.node.http.prepare` checks the form);
the certificate a TLS connection presents is compared with it before the request is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeAlias, TypeVar

from p2pshare.core.admission import CLIENT_KEEPALIVE
from p2pshare.core.errors import P2PShareError, RemoteError, Unavailable
from p2pshare.node import zerocopy
from p2pshare.node.http import PIN_MISMATCH, address_pin, prepare, url_of
from p2pshare.node.limits import RateLimiter
from p2pshare.node.wire import read_answer, wire_error

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
"""Seconds of silence that end a request (aiohttp's ``sock_read`` in :mod:`.http`)."""
IDLE_SECONDS = CLIENT_KEEPALIVE
"""A kept-alive connection unused this long is closed rather than reused: 15 s, as the aiohttp
calls keep theirs, below the 20 s a node's peer API keeps one (at 20 s here too, a request sent
on a connection the holder was closing would be lost: a fetch, and a push whose source can
``rewind``, are sent again on a fresh one; any other push fails, and the upload would give the
holder up)."""
IDLE_PER_ADDRESS = 16
READ_PIECE = 1 << 20
"""Bytes read (and hashed) per step: the hash runs on bytes still in the CPU's cache."""


T = TypeVar("T")


class BlockingSource(Protocol):
    """Bytes read a piece at a time in a worker thread (a chunk store reader is one)."""

    def read_into(self, into: memoryview) -> int: ...


Source: TypeAlias = bytes | bytearray | memoryview | BlockingSource


def _client_context() -> ssl.SSLContext:
    # the certificate is self-signed: it is checked against the address's pin instead
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True, slots=True)
class Fetched:
    """A chunk body read into the caller's buffer, and the SHA-256 (hex) of those bytes."""

    data: memoryview
    sha256: str


@dataclass
class _Job:
    """One request in a worker thread; :meth:`abort` ends it from the event loop's thread."""

    conn: http.client.HTTPConnection | None = None
    aborted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if self.aborted:
                conn.close()
                raise Unavailable("request cancelled")
            self.conn = conn

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            sock = self.conn.sock if self.conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class StreamPool:
    """Worker threads and kept-alive connections that move chunk bodies (see the module doc).

    ``workers`` bounds the requests running at once (more wait for a thread). Call
    :meth:`close` when done.
    """

    def __init__(
        self,
        *,
        workers: int = 16,
        download: RateLimiter | None = None,
        upload: RateLimiter | None = None,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk-io")
        self._down = download or RateLimiter(None)
        self._up = upload or RateLimiter(None)
        self._tls = _client_context()
        self._idle: dict[str, list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self.pushed = zerocopy.SentCounts()
        """pushes from a reader that the holder answered: by ``sendfile`` (a chunk file on a
        plain connection, no upload limit) and through the process"""

    async def get_into(self, address: str, path: str, into: memoryview, *, where: str) -> Fetched:
        """GET ``path`` on ``address`` (a body of exactly ``len(into)`` bytes) into ``into``.

        Raises the error of a problem answer, :class:`Unavailable` when the node cannot be
        reached, is silent for :data:`READ_TIMEOUT` or its certificate is not the pinned one,
        and :class:`RemoteError` for a body of another length.
        """
        url = prepare("GET", url_of(address, path)).url  # refuses https without a pin
        job = _Job()
        return await self._run(job, lambda: self._get(job, address, url.raw_path_qs, into, where))

    async def put_from(
        self,
        address: str,
        target: str,
        headers: Mapping[str, str],
        body: Source,
        size: int,
        *,
        where: str,
    ) -> bytes:
        """PUT ``size`` bytes to ``target`` (path and query) on ``address``; return the answer.

        ``body`` is bytes, or a blocking source (``read_into(view) -> int``, e.g. a chunk store
        reader) read a piece at a time in the worker thread. ``headers`` are sent as given (the
        caller signs; Content-Length is set here). Raises like :meth:`get_into`; an answer
        above 64 KiB is a :class:`RemoteError`.
        """
        job = _Job()
        all_headers = {**headers, "Content-Length": str(size)}
        return await self._run(
            job, lambda: self._put(job, address, target, all_headers, body, size, where)
        )

    async def _run(self, job: _Job, work: Callable[[], T]) -> T:
        if self._closed:
            raise Unavailable("the node is stopping")
        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            job.abort()
            # the aborted thread still ends, with an error nobody waits for now: take it, or
            # asyncio logs "Future exception was never retrieved" for each cancelled fetch
            future.add_done_callback(_drop_outcome)
            raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop taking requests, abort the waiting ones' threads, close kept connections."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                conn.close()

    # --- in worker threads -------------------------------------------------------------

    def _get(self, job: _Job, address: str, target: str, into: memoryview, where: str) -> Fetched:
        for attempt in (0, 1):
            conn, reused = self._connection(address, where)
            job.attach(conn)
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if reused and attempt == 0 and not job.aborted:
                    continue  # the other side closed an idle connection: once more, fresh
                raise Unavailable(f"{where}: connection lost") from None
            except BaseException as exc:
                conn.close()
                raise _mapped(exc, where, job) from None
            try:
                fetched = self._read_body(resp, into, where)
            except BaseException as exc:
                conn.close()
                raise _mapped(exc, where, job) from None
            if resp.will_close:
                conn.close()
            else:
                self._keep(address, conn)
            return fetched
        raise AssertionError("unreachable")

    def _put(
        self,
        job: _Job,
        address: str,
        target: str,
        headers: dict[str, str],
        body: Source,
        size: int,
        where: str,
    ) -> bytes:
        for attempt in (0, 1):
            conn, reused = self._connection(address, where)
            job.attach(conn)
            try:
                conn.putrequest("PUT", target, skip_accept_encoding=True)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                zero_copy = self._send_body(conn, body, size, where)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused and attempt == 0 and not job.aborted and _rewound(body):
                    # the other side closed an idle connection as the push went: once more,
                    # fresh (a push is idempotent: a holder that has the chunk answers so)
                    continue
                raise _mapped(exc, where, job) from None
            except BaseException as exc:
                conn.close()
                raise _mapped(exc, where, job) from None
            try:
                answer = read_answer(resp, where)
            except BaseException as exc:
                conn.close()
                raise _mapped(exc, where, job) from None
            if resp.will_close or not resp.isclosed():
                conn.close()
            else:
                self._keep(address, conn)
            if not isinstance(body, bytes | bytearray | memoryview):
                with self._lock:
                    if zero_copy:
                        self.pushed.zero_copy += 1
                    else:
                        self.pushed.copied += 1
            return answer
        raise AssertionError("unreachable")

    def _send_body(
        self, conn: http.client.HTTPConnection, body: Source, size: int, where: str
    ) -> bool:
        """Send ``body``; return True when it went by ``sendfile``."""
        sent = 0
        if isinstance(body, bytes | bytearray | memoryview):
            view = memoryview(body).cast("B")
            if len(view) != size:
                raise ValueError(f"a body of {len(view)} bytes said to be {size}")
            while sent < size:
                piece = view[sent : sent + READ_PIECE]
                self._up.spend_blocking(len(piece))
                conn.send(piece)
                sent += len(piece)
            return False
        # a chunk file on a plain connection, nothing pacing: from the page cache to the
        # socket without a copy through the process (the second holder's push of a chunk
        # finds it cached); else read a piece at a time (direct I/O for a chunk file) and sent
        fileno = getattr(body, "fileno", None)
        fd = fileno() if fileno is not None and not self._up.rate else None
        if fd is not None and conn.sock is not None and not isinstance(conn.sock, ssl.SSLSocket):
            try:
                zerocopy.send_file_blocking(conn.sock, fd, size, idle_timeout=READ_TIMEOUT)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                raise RemoteError(
                    f"{where}: the chunk file to send is short: {exc.strerror}"
                ) from None
            return True
        buf = getattr(self._local, "buf", None)
        if buf is None:  # one per worker thread, reused: no fresh mapping per push
            buf = self._local.buf = bytearray(READ_PIECE)
        with memoryview(buf) as piece:
            while sent < size:
                n = body.read_into(piece[: min(len(piece), size - sent)])
                if n <= 0:
                    raise RemoteError(f"{where}: the chunk to send ended at {sent} of {size} bytes")
                self._up.spend_blocking(n)
                conn.send(piece[:n])
                sent += n
        return False

    def _read_body(self, resp: http.client.HTTPResponse, into: memoryview, where: str) -> Fetched:
        size = len(into)
        if resp.status >= 300:
            read_answer(resp, where)  # raises the problem's error
        if resp.length is not None and resp.length != size:
            raise RemoteError(f"{where}: the body is {resp.length} bytes, expected {size}")
        digest = hashlib.sha256()
        got = 0
        while got < size:
            end = min(size, got + READ_PIECE)
            n = resp.readinto(into[got:end])
            if not n:
                raise RemoteError(f"{where}: the body ended at {got} of {size} bytes")
            digest.update(into[got : got + n])
            got += n
            self._down.spend_blocking(n)
        if resp.length is None and resp.read(1):
            raise RemoteError(f"{where}: the body is longer than {size} bytes")
        return Fetched(into, digest.hexdigest())

    def _connection(self, address: str, where: str) -> tuple[http.client.HTTPConnection, bool]:
        now = time.monotonic()
        while True:
            with self._lock:
                conns = self._idle.get(address, [])
                if not conns:
                    break
                since, conn = conns.pop()
            if now - since < IDLE_SECONDS and not _dropped(conn):
                return conn, True
            conn.close()
        return self._connect(address, where), False

    def _connect(self, address: str, where: str) -> http.client.HTTPConnection:
        url = prepare("GET", address).url
        host, port = url.host or "", url.port
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=CONNECT_TIMEOUT, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
            sock = conn.sock
            assert sock is not None
            sock.settimeout(READ_TIMEOUT)
            _check_pin(sock, address_pin(address), where)
        except BaseException as exc:
            conn.close()
            raise _mapped(exc, where, None) from None
        return conn

    def _keep(self, address: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(address, [])
            if self._closed or len(conns) >= IDLE_PER_ADDRESS:
                conn.close()
            else:
                conns.append((time.monotonic(), conn))


def _rewound(body: Source) -> bool:
    """Whether ``body`` can be sent again from its first byte (and is ready to be)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return True
    rewind = getattr(body, "rewind", None)
    return bool(rewind is not None and rewind())


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether a kept connection was closed by the other side (readable while idle: EOF)."""
    sock = conn.sock
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _check_pin(sock: socket.socket, pin: str | None, where: str) -> None:
    """Refuse a TLS peer whose certificate is not the one ``pin`` names."""
    if isinstance(sock, ssl.SSLSocket) and pin is not None:
        der = sock.getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() != pin:
            raise Unavailable(f"{where}: {PIN_MISMATCH}")


def _mapped(exc: BaseException, where: str, job: _Job | None) -> BaseException:
    """Our error for what a worker thread met on the wire (``job`` aborted: cancelled)."""
    if job is not None and job.aborted and not isinstance(exc, P2PShareError):
        return Unavailable(f"{where}: request cancelled")
    return wire_error(exc, where)


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a fetch that was cancelled as seen (it is of no use any more)."""
    if not future.cancelled():
        future.exception()
