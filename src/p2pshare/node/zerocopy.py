"""Zero-copy sending of a file's bytes on a plain TCP connection, under any event loop.

aiohttp sends a file with ``loop.sendfile``, which uvloop (the node's loop) does not implement:
aiohttp then reads the file in pieces in worker threads and writes them to the socket, so every
byte served is copied into the process and out again. Measured here (1 GiB, three holders, three
downloaders at once, two rounds each way): each holder spent 1.0-1.4 CPU seconds a run that
way, 0.35-0.55 with :func:`send_file` (docs/performance.md).

:func:`send_file` calls ``os.sendfile`` in a worker thread, on a duplicate of the connection's
socket descriptor, once the transport has nothing buffered (the response head has gone): the
bytes go from the page cache to the socket without entering the process. The event loop keeps
the connection and writes nothing to it while the handler awaits the send, so the bytes on the
wire stay in order. A TLS connection cannot be sent to this way: :func:`send_file` says so and
the caller copies.

An uploader pushes its chunk files the same way (:func:`send_file_blocking`, from the worker
thread of :mod:`p2pshare.node.streams` that owns the connection): the file is read through the
page cache, so the push of a chunk to its second holder reads no disk either.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class SentCounts:
    """Chunk bodies sent in full: by ``sendfile`` and through the process."""

    zero_copy: int = 0
    copied: int = 0


POLL_SECONDS = 0.25
"""Longest wait for the socket to take more bytes before the send checks whether it was
abandoned (its awaiting task cancelled)."""


class SendStalled(ConnectionError):
    """The peer took no bytes for the idle timeout; the connection must be dropped."""


async def send_file(
    transport: asyncio.Transport | None, fd: int, count: int, *, idle_timeout: float
) -> bool:
    """Send bytes ``0..count`` of the open file ``fd`` on ``transport``'s socket by ``sendfile``.

    Returns False, having sent nothing, when this transport cannot take it (TLS, no socket, or
    bytes of its own still waiting to go); the caller then writes the bytes itself. Raises
    :class:`ConnectionError` when the peer goes away, :class:`SendStalled` when it takes nothing
    for ``idle_timeout`` seconds, and ``OSError(EIO)`` when the file is shorter than ``count``;
    the response is then cut, and the caller must close the connection.
    """
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the connection closed before the body was sent")
    if transport.get_extra_info("sslcontext") is not None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_write_buffer_size():
        return False
    # the thread's own descriptors: a send abandoned (its task cancelled) may run on for a
    # moment after the transport and the caller's file are closed; their numbers may then be
    # reused, but not these
    out, src = _own_descriptors(sock, fd)
    abandoned = threading.Event()
    try:
        await asyncio.to_thread(_send_all, out, src, count, idle_timeout, abandoned)
    finally:
        abandoned.set()
    return True


def send_file_blocking(sock: socket.socket, fd: int, count: int, *, idle_timeout: float) -> None:
    """Blocking, for a worker thread that owns ``sock`` (a plain TCP socket): send bytes
    ``0..count`` of the open file ``fd`` by ``sendfile``. Raises like :func:`send_file`; a
    send ended from another thread by shutting the socket raises :class:`ConnectionError`."""
    out, src = _own_descriptors(sock, fd)
    _send_all(out, src, count, idle_timeout, threading.Event())


def _own_descriptors(sock: socket.socket, fd: int) -> tuple[int, int]:
    """Return duplicates of ``sock``'s descriptor and of ``fd``, for :func:`_send_all` to close."""
    out = os.dup(sock.fileno())
    try:
        return out, os.dup(fd)
    except OSError:
        os.close(out)
        raise


def _send_all(
    out: int, fd: int, count: int, idle_timeout: float, abandoned: threading.Event
) -> None:
    """Blocking: send ``count`` bytes of ``fd`` from offset 0 to the non-blocking socket
    ``out``, waiting for room as long as the peer keeps taking bytes; close both."""
    try:
        poller = select.poll()
        poller.register(out, select.POLLOUT)
        offset = 0
        last_progress = time.monotonic()
        while offset < count:
            try:
                sent = os.sendfile(out, fd, offset, count - offset)
            except BlockingIOError:
                sent = -1
            if sent == 0:
                raise OSError(errno.EIO, f"the file ended at {offset} of {count} bytes")
            if sent > 0:
                offset += sent
                last_progress = time.monotonic()
                continue
            if abandoned.is_set():
                raise ConnectionAbortedError("the send was abandoned")
            idle = time.monotonic() - last_progress
            if idle >= idle_timeout:
                raise SendStalled(f"the peer took no bytes for {idle_timeout:g} s")
            poller.poll(1000 * min(POLL_SECONDS, idle_timeout - idle))
    finally:
        os.close(out)
        os.close(fd)
