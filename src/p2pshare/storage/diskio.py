"""The blocking half of the file chunk store: layout, atomic writes, listing, hashing, quarantine.

Every function here blocks on the disk; the store calls them through :func:`asyncio.to_thread`
and nothing else in the package touches chunk files. The layout of a data directory::

    DATA/chunks/ab/abcdef...          one file per chunk, named by its full 64-hex id
    DATA/chunks/ab/.abcdef....<uuid>.tmp   a write in progress (or orphaned by a crash)
    DATA/quarantine/<id>.<time>       chunks whose bytes no longer match their id
    DATA/chunks.lock                  per-chunk record locks (see locks.py)
    DATA/store.lock                   the whole-directory lock, when taken
    DATA/reservations.sqlite3         reservations, file references, lost chunks not reported
                                      yet (see reservation_db.py)

A write goes to a temp file with a unique name in the chunk's own directory, is hashed as it is
written, fsynced, renamed over the final name, and the directory is fsynced: after a crash a
chunk is either whole under its name or absent, and the temp file is swept by the next open.

Bulk bytes are written with direct I/O (``O_DIRECT``) where the filesystem allows it: they go
from a reused, page-aligned staging buffer to the disk without passing through the page cache.
Chunks are cold data once written, and filling the page cache costs CPU: measured here, about
2.9 CPU seconds per GiB written through the cache against 0.04 direct (a VM whose fresh pages
are expensive; docs/performance.md). Where direct I/O is refused (tmpfs, some network
filesystems) the same calls write through the cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from p2pshare.core.ids import is_valid_id

CHUNKS_DIR = "chunks"
QUARANTINE_DIR = "quarantine"
TMP_SUFFIX = ".tmp"
HASH_PIECE = 1024 * 1024
BLOCK = 4096
"""Alignment of direct I/O offsets, lengths and buffers (the page size; a multiple of every
disk's logical block)."""
STAGE_SIZE = 1 << 20
"""Bytes of one staging buffer: a direct write or read moves at most this much."""
STAGES_KEPT = 8
"""Staging buffers kept for reuse; more are made when needed and unmapped after use."""


def chunk_path(root: Path, chunk_id: str) -> Path:
    """Return where chunk ``chunk_id`` lives under the data directory ``root`` (pure)."""
    return root / CHUNKS_DIR / chunk_id[:2] / chunk_id


def make_dirs(root: Path) -> None:
    """Create ``root``, its chunk directory and its quarantine directory when missing."""
    (root / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    (root / QUARANTINE_DIR).mkdir(exist_ok=True)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Stages:
    """Page-aligned buffers for direct I/O, reused (a fresh mapping costs a page fault per
    page), at most :data:`STAGES_KEPT` kept."""

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, STAGE_SIZE)

    def give(self, stage: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < STAGES_KEPT:
                self._free.append(stage)
                return
        stage.close()


_STAGES = _Stages()


def try_direct(fd: int) -> bool:
    """Switch ``fd`` to direct I/O; return False (``fd`` unchanged) where it is refused."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return False
    return True


def _buffered(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _pwrite_full(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def aligned_buffer(size: int) -> mmap.mmap:
    """Return a new zeroed buffer of ``size`` bytes whose start is page-aligned: bytes read
    into it go to a direct-I/O file without a copy through a staging buffer."""
    return mmap.mmap(-1, max(1, size))


def _direct_prefix(view: memoryview, offset: int) -> int:
    """Return how many leading bytes of ``view`` can be written at ``offset`` by direct I/O
    straight from its memory (whole blocks of an aligned, writable buffer at an aligned
    offset), or 0."""
    whole = len(view) // BLOCK * BLOCK
    if not whole or offset % BLOCK or view.readonly or not view.c_contiguous:
        return 0
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    return whole if address % BLOCK == 0 else 0


class BlockFile:
    """Writes and reads bytes at block-aligned offsets of one open file: by direct I/O through
    a staging buffer when ``fd`` is in direct mode, plainly otherwise.

    A piece that ends the file (``end_of_file``) is padded to a block for the disk, and the file
    is then cut back to its size. A direct write the kernel refuses (``EINVAL``) switches the
    descriptor back to the page cache and is written again there. Thread-safe for writes to
    different offsets; call :meth:`close` to give the staging buffers back.
    """

    def __init__(self, fd: int, *, direct: bool) -> None:
        self.fd = fd
        self.direct = direct

    def write_at(self, data: Any, offset: int, *, end_of_file: bool = False) -> None:
        """Write ``data`` (any bytes-like) at ``offset`` (a multiple of :data:`BLOCK` when
        direct)."""
        view = memoryview(data).cast("B")
        if not self.direct:
            _pwrite_full(self.fd, view, offset)
            return
        whole = _direct_prefix(view, offset)
        if whole:  # straight from the caller's aligned buffer: no copy
            if not self._write_direct(view[:whole], offset):
                _pwrite_full(self.fd, view, offset)  # refused: all of it through the cache
                return
            view, offset = view[whole:], offset + whole
            if not view:
                return
        stage = _STAGES.take()
        try:
            with memoryview(stage) as staged:
                for start in range(0, len(view), STAGE_SIZE):
                    piece = view[start : start + STAGE_SIZE]
                    staged[: len(piece)] = piece
                    last = end_of_file and start + STAGE_SIZE >= len(view)
                    self.write_staged(staged, len(piece), offset + start, end_of_file=last)
        finally:
            _STAGES.give(stage)

    def write_staged(
        self, staged: memoryview, n: int, offset: int, *, end_of_file: bool = False
    ) -> None:
        """Write the first ``n`` bytes of ``staged`` (a staging buffer's view; the bytes past
        ``n`` up to the next block are overwritten with zeros) at ``offset``."""
        if not self.direct:
            _pwrite_full(self.fd, staged[:n], offset)
            return
        length = _padded(n)
        staged[n:length] = bytes(length - n)
        if not self._write_direct(staged[:length], offset):
            _pwrite_full(self.fd, staged[:n], offset)
            return
        if end_of_file and length != n:
            os.ftruncate(self.fd, offset + n)

    def _write_direct(self, blocks: memoryview, offset: int) -> bool:
        """Write whole ``blocks`` of aligned memory at ``offset`` by direct I/O; return False,
        having written nothing and switched to the page cache, if the kernel refuses it."""
        try:
            _pwrite_full(self.fd, blocks, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # refused after all: through the page cache from here on
            _buffered(self.fd)
            return False
        return True

    def read_into(self, into: memoryview, offset: int) -> int:
        """Read up to ``len(into)`` bytes at ``offset``; return how many (fewer at the end of
        the file)."""
        if not self.direct:
            return os.preadv(self.fd, [into], offset)
        stage = _STAGES.take()
        done = 0
        try:
            with memoryview(stage) as staged:
                while done < len(into):
                    want = min(STAGE_SIZE, len(into) - done)
                    got = max(0, os.preadv(self.fd, [staged[: _padded(want)]], offset + done))
                    n = min(got, want)
                    into[done : done + n] = staged[:n]
                    done += n
                    if n < want:
                        break
        finally:
            _STAGES.give(stage)
        return done

    def hash_range(self, digest: Any, offset: int, end: int) -> None:
        """Feed bytes ``offset`` to ``end`` of the file into ``digest``: direct reads through a
        staging buffer when direct (nothing enters the page cache), plain reads otherwise."""
        if not self.direct:
            while offset < end:
                piece = os.pread(self.fd, min(4 * STAGE_SIZE, end - offset), offset)
                if not piece:
                    raise OSError(errno.EIO, f"the file ends at {offset} bytes, before {end}")
                digest.update(piece)
                offset += len(piece)
            return
        stage = _STAGES.take()
        try:
            with memoryview(stage) as staged:
                while offset < end:
                    want = min(STAGE_SIZE, end - offset)
                    got = os.preadv(self.fd, [staged[: _padded(want)]], offset)
                    if got < want:  # a regular file reads short only at its end
                        at = offset + max(got, 0)
                        raise OSError(errno.EIO, f"the file ends at {at} bytes, before {end}")
                    digest.update(staged[:want])
                    offset += want
        finally:
            _STAGES.give(stage)


def temp_chunk_id(name: str) -> str | None:
    """Return the chunk id a temp file named ``name`` was writing, or None if it is not one."""
    if name.startswith(".") and name.endswith(TMP_SUFFIX):
        chunk_id = name[1:].split(".", 1)[0]
        if is_valid_id(chunk_id):
            return chunk_id
    return None


def _walk(root: Path) -> tuple[list[os.DirEntry[str]], list[Path]]:
    """Return the directory entries of the chunks under ``root`` and the temp files' paths."""
    chunks: list[os.DirEntry[str]] = []
    temps: list[Path] = []
    with os.scandir(root / CHUNKS_DIR) as fanouts:
        for fanout in fanouts:
            if len(fanout.name) != 2 or not fanout.is_dir(follow_symlinks=False):
                continue
            with os.scandir(fanout.path) as entries:
                for entry in entries:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if is_valid_id(entry.name) and entry.name[:2] == fanout.name:
                        chunks.append(entry)
                    elif temp_chunk_id(entry.name) is not None:
                        temps.append(Path(entry.path))
    return chunks, temps


def scan_dir(root: Path) -> tuple[dict[str, int], list[Path]]:
    """Return the chunks under ``root`` (id -> size) and the temp files found beside them.

    Files that are neither a chunk in its right fan-out directory nor a temp file are ignored,
    and so are chunks deleted (by another process) while the directory is read.
    """
    entries, temps = _walk(root)
    chunks: dict[str, int] = {}
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            chunks[entry.name] = entry.stat(follow_symlinks=False).st_size
    return chunks, temps


def list_ids(root: Path) -> list[str]:
    """Return the sorted ids of the chunks under ``root``."""
    return sorted(entry.name for entry in _walk(root)[0])


def file_size(path: Path) -> int | None:
    """Return the size of the regular file at ``path``, or None when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def remove(path: Path) -> int | None:
    """Delete the file at ``path`` and return its size, or None when there was none."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    return size


def open_for_read(path: Path) -> tuple[int, int] | None:
    """Open ``path`` for reading; return ``(fd, size)``, or None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


def hash_file(path: Path) -> str | None:
    """Return the SHA-256 hex of the file at ``path``, read in 1 MiB pieces; None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    try:
        while piece := os.read(fd, HASH_PIECE):
            digest.update(piece)
    finally:
        os.close(fd)
    return digest.hexdigest()


def quarantine(root: Path, chunk_id: str, stamp: float) -> int | None:
    """Move chunk ``chunk_id`` to ``DATA/quarantine/<id>.<stamp in ms>``; return its size.

    Returns None when the chunk is gone.
    """
    source = chunk_path(root, chunk_id)
    size = file_size(source)
    if size is None:
        return None
    target = root / QUARANTINE_DIR / f"{chunk_id}.{int(stamp * 1000)}"
    try:
        source.replace(target)
    except FileNotFoundError:
        return None
    fsync_dir(source.parent)
    fsync_dir(target.parent)
    return size


class Appender:
    """Appends bytes to the file open at ``fd`` from its start: by direct I/O where allowed
    (gathered in a staging buffer, written a buffer at a time, the last one padded and cut
    back), plainly otherwise. Call :meth:`close` (flushes what is staged; does not close
    ``fd``) or, after a failure, :meth:`drop`."""

    def __init__(self, fd: int) -> None:
        self._out = BlockFile(fd, direct=try_direct(fd))
        self._stage: mmap.mmap | None = _STAGES.take() if self._out.direct else None
        self._staged = 0
        self.written = 0
        """bytes handed to the disk so far (not counting what is staged)"""

    def write(self, piece: bytes | bytearray | memoryview) -> None:
        """Append ``piece`` (in direct mode, a staging buffer's worth at a time)."""
        view = memoryview(piece).cast("B")
        if self._stage is None:
            self._out.write_at(view, self.written)
            self.written += len(view)
            return
        whole = 0 if self._staged else _direct_prefix(view, self.written)
        if whole:  # whole blocks of an aligned buffer: written from it, not staged
            self._out.write_at(view[:whole], self.written)
            self.written += whole
            view = view[whole:]
        while view:
            n = min(len(view), STAGE_SIZE - self._staged)
            with memoryview(self._stage) as staged:
                staged[self._staged : self._staged + n] = view[:n]
            self._staged += n
            view = view[n:]
            if self._staged == STAGE_SIZE:
                self._flush(last=False)

    def _flush(self, *, last: bool) -> None:
        if self._stage is None or not self._staged:
            return
        with memoryview(self._stage) as staged:
            self._out.write_staged(staged, self._staged, self.written, end_of_file=last)
        self.written += self._staged
        self._staged = 0

    def close(self) -> None:
        """Write what is staged (the file's end) and give the staging buffer back."""
        self._flush(last=True)
        self.drop()

    def drop(self) -> None:
        """Give the staging buffer back without writing what is staged (idempotent)."""
        if self._stage is not None:
            stage, self._stage = self._stage, None
            _STAGES.give(stage)


class AtomicWriter:
    """Writes one chunk to a unique temp file, hashing as it goes; publishes it by rename.

    Use: ``write`` pieces, ``finish`` (returns the SHA-256 hex, data fsynced), then ``publish``
    or ``discard``. ``discard`` is safe at any point and after any failure.
    """

    def __init__(
        self, root: Path, chunk_id: str, *, hashing: bool = True, durable: bool = True
    ) -> None:
        self.final = chunk_path(root, chunk_id)
        self.temp = self.final.with_name(f".{chunk_id}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        self.published = False
        self._hash = hashlib.sha256() if hashing else None
        self._durable = durable
        self._fd = -1
        self._out: Appender | None = None

    def start(self) -> None:
        """Create the fan-out directory when needed and the temp file."""
        fanout = self.final.parent
        if not fanout.is_dir():
            with contextlib.suppress(FileExistsError):
                fanout.mkdir()
                fsync_dir(fanout.parent)
        self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._out = Appender(self._fd)

    def write(self, piece: bytes | bytearray | memoryview) -> None:
        """Hash ``piece`` (unless made with ``hashing=False``) and append it to the temp file."""
        if self._hash is not None:
            self._hash.update(piece)
        assert self._out is not None
        self._out.write(piece)

    def finish(self) -> str:
        """Flush the data to disk, close the temp file and return the SHA-256 hex of the bytes
        ("" when made with ``hashing=False``). With ``durable=False`` nothing is flushed: the
        kernel writes the bytes back when it likes (a cache copy, see ChunkStore.put)."""
        assert self._out is not None
        self._out.close()
        if self._durable:
            os.fsync(self._fd)
        fd, self._fd = self._fd, -1
        os.close(fd)
        return self._hash.hexdigest() if self._hash is not None else ""

    def publish(self) -> None:
        """Give the temp file the chunk's name and make the rename durable."""
        self.temp.replace(self.final)
        self.published = True
        if self._durable:
            fsync_dir(self.final.parent)

    def discard(self) -> None:
        """Close and delete the temp file, if any (never raises for a missing file)."""
        if self._out is not None:
            self._out.drop()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if not self.published:
            with contextlib.suppress(FileNotFoundError):
                self.temp.unlink()
