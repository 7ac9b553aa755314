"""The chunk store on disk: :class:`FileChunkStore` (layout and write protocol: diskio.py).

Several processes may open one data directory at once (a per-chunk ``fcntl`` record lock keeps
their writes of one chunk apart), but each keeps its own quota accounting and reservations in
memory, loaded at open: the quota is only enforced across them if a single process owns the
directory, which ``open(..., exclusive=True)`` guarantees. Open one store per data directory
per process: POSIX record locks belong to the process, so two stores of one process on one
directory would not keep each other out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from p2pshare.core.ids import validate_id
from p2pshare.storage import diskio
from p2pshare.storage.chunkstore import (
    DEFAULT_MAX_CHUNK_SIZE,
    READ_PIECE,
    ChunkReader,
    ChunkStore,
    ChunkWriter,
    Clock,
    validate_max_chunk_size,
)
from p2pshare.storage.ledger import Ledger, Reservation, validate_quota
from p2pshare.storage.locks import DirLock, RecordLocks
from p2pshare.storage.reservation_db import ReservationDB

log = logging.getLogger(__name__)

STORE_LOCK = "store.lock"
CHUNK_LOCKS = "chunks.lock"


class FileChunkStore(ChunkStore):
    """Chunks as files under ``DATA/chunks/ab/abcdef...``; reservations in SQLite.

    Build it with :meth:`open`; the constructor does no I/O.
    """

    def __init__(
        self,
        data_dir: Path,
        ledger: Ledger,
        *,
        clock: Clock,
        max_chunk_size: int,
        record_locks: RecordLocks,
        db: ReservationDB,
        dir_lock: DirLock | None,
    ) -> None:
        super().__init__(ledger, clock=clock, max_chunk_size=max_chunk_size)
        self._root = data_dir
        self._record_locks = record_locks
        self._db = db
        self._dir_lock = dir_lock
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        quota: int,
        clock: Clock = time.time,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        exclusive: bool = False,
    ) -> FileChunkStore:
        """Open (creating when needed) the store in ``data_dir`` and return it.

        Counts the bytes of the chunks found, removes temp files orphaned by a crashed writer
        (not those of a live writer in another process), loads the reservations and drops the
        expired ones. With ``exclusive`` the whole directory is locked for this store's life.

        Raises :class:`InvalidSize` for a bad ``quota`` or ``max_chunk_size``,
        :class:`StoreLocked` when ``exclusive`` and another process has the directory, and
        :class:`OSError` / :class:`sqlite3.Error` when the directory or database is unusable.
        """
        validate_quota(quota)
        validate_max_chunk_size(max_chunk_size)
        root = Path(data_dir)
        opened = await asyncio.to_thread(_open_sync, root, exclusive)
        ledger = Ledger(quota, clock, used=opened.used, reservations=opened.reservations)
        store = cls(
            root,
            ledger,
            clock=clock,
            max_chunk_size=max_chunk_size,
            record_locks=opened.record_locks,
            db=opened.db,
            dir_lock=opened.dir_lock,
        )
        try:
            await store.expire()
        except BaseException:
            await store.close()
            raise
        log.info(
            "opened chunk store %s: %d chunks, %d bytes used of %d, %d orphaned temp files removed",
            root,
            opened.chunks,
            opened.used,
            quota,
            opened.orphans_removed,
        )
        return store

    @property
    def data_dir(self) -> Path:
        """Return the store's data directory."""
        return self._root

    def path(self, chunk_id: str) -> Path:
        """Return the file that holds chunk ``chunk_id`` (it may not exist; no I/O is done).

        Meant for ``sendfile``; open it and handle :class:`FileNotFoundError`, since a delete
        may remove it at any time. Raises :class:`InvalidId` for a malformed id.
        """
        return diskio.chunk_path(self._root, validate_id(chunk_id, "chunk id"))

    async def close(self) -> None:
        """Close the database and the lock files, releasing every lock (idempotent).

        Call it once no operation of the store is running; readers still open keep working.
        """
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        try:
            self._db.close()
        finally:
            self._record_locks.close()
            if self._dir_lock is not None:
                self._dir_lock.close()

    # -- hooks -----------------------------------------------------------------------------

    def _process_lock(self, chunk_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._record_locks.hold(chunk_id)

    async def _size_of(self, chunk_id: str) -> int | None:
        return await asyncio.to_thread(diskio.file_size, diskio.chunk_path(self._root, chunk_id))

    def _writer(self, chunk_id: str, *, hashing: bool = True, durable: bool = True) -> ChunkWriter:
        writer = diskio.AtomicWriter(self._root, chunk_id, hashing=hashing, durable=durable)
        return _FileWriter(writer)

    async def _reader(self, chunk_id: str) -> ChunkReader | None:
        path = diskio.chunk_path(self._root, chunk_id)
        opened = await asyncio.to_thread(diskio.open_for_read, path)
        if opened is None:
            return None
        fd, size = opened
        return _FileReader(chunk_id, size, fd)

    async def _remove(self, chunk_id: str) -> int | None:
        return await asyncio.to_thread(diskio.remove, diskio.chunk_path(self._root, chunk_id))

    async def _ids(self) -> list[str]:
        return await asyncio.to_thread(diskio.list_ids, self._root)

    async def _hash(self, chunk_id: str) -> str | None:
        return await asyncio.to_thread(diskio.hash_file, diskio.chunk_path(self._root, chunk_id))

    async def _quarantine(self, chunk_id: str) -> int | None:
        return await asyncio.to_thread(diskio.quarantine, self._root, chunk_id, self._clock())

    async def _save_new(self, reservation: Reservation) -> None:
        await asyncio.to_thread(self._db.insert, reservation)

    async def _save_used(self, reservation: Reservation) -> None:
        await asyncio.to_thread(self._db.set_used, reservation.reservation_id, reservation.used)

    async def _forget(self, reservation_ids: list[str]) -> None:
        await asyncio.to_thread(self._db.delete, reservation_ids)


class _FileWriter:
    """Runs each step of a :class:`diskio.AtomicWriter` in a worker thread."""

    def __init__(self, writer: diskio.AtomicWriter) -> None:
        self._writer = writer

    @property
    def published(self) -> bool:
        return self._writer.published

    async def start(self) -> None:
        await asyncio.to_thread(self._writer.start)

    async def write(self, piece: bytes | bytearray | memoryview) -> None:
        await asyncio.to_thread(self._writer.write, piece)

    async def finish(self) -> str:
        return await asyncio.to_thread(self._writer.finish)

    async def publish(self) -> None:
        await asyncio.to_thread(self._writer.publish)

    async def discard(self) -> None:
        await asyncio.to_thread(self._writer.discard)


class _FileReader(ChunkReader):
    """Reads a chunk file through its descriptor, one piece per worker-thread call."""

    def __init__(self, chunk_id: str, size: int, fd: int) -> None:
        super().__init__(chunk_id, size)
        self._fd = fd
        self._blocks: diskio.BlockFile | None = None
        self._offset = 0
        # A reader dropped without aclose() still gives its descriptor back when collected.
        self._finalizer = weakref.finalize(self, os.close, fd)

    async def _read_piece(self) -> bytes:
        return await asyncio.to_thread(os.read, self._fd, READ_PIECE)

    def read_into(self, into: memoryview) -> int:
        # by direct I/O where allowed: a chunk pushed to holders does not fill the page cache
        if self._blocks is None:
            self._blocks = diskio.BlockFile(self._fd, direct=diskio.try_direct(self._fd))
        n = self._blocks.read_into(into, self._offset)
        self._offset += n
        return n

    async def _close(self) -> None:
        self._finalizer.detach()
        await asyncio.to_thread(os.close, self._fd)


@dataclass
class _Opened:
    record_locks: RecordLocks
    db: ReservationDB
    dir_lock: DirLock | None
    reservations: list[Reservation]
    chunks: int
    used: int
    orphans_removed: int


def _open_sync(root: Path, exclusive: bool) -> _Opened:
    """Do the blocking part of :meth:`FileChunkStore.open` (in a worker thread)."""
    dir_lock: DirLock | None = None
    record_locks: RecordLocks | None = None
    db: ReservationDB | None = None
    try:
        diskio.make_dirs(root)
        if exclusive:
            dir_lock = DirLock.acquire(root / STORE_LOCK)
        record_locks = RecordLocks.open(root / CHUNK_LOCKS)
        chunks, temps = diskio.scan_dir(root)
        removed = _remove_orphans(temps, record_locks)
        db = ReservationDB.open(root)
        reservations = db.load()
    except BaseException:
        if db is not None:
            db.close()
        if record_locks is not None:
            record_locks.close()
        if dir_lock is not None:
            dir_lock.close()
        raise
    return _Opened(
        record_locks,
        db,
        dir_lock,
        reservations,
        chunks=len(chunks),
        used=sum(chunks.values()),
        orphans_removed=removed,
    )


def _remove_orphans(temps: list[Path], record_locks: RecordLocks) -> int:
    """Delete the temp files no live writer owns; return how many were deleted.

    A writer holds its chunk's record lock while its temp file exists, so a temp file whose
    lock is free was left by a writer that died.
    """
    removed = 0
    for temp in temps:
        chunk_id = diskio.temp_chunk_id(temp.name)
        if chunk_id is None or not record_locks.try_acquire(chunk_id):
            continue
        try:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
                removed += 1
                log.info("removed orphaned temp file %s", temp)
        finally:
            record_locks.release(chunk_id)
    return removed
