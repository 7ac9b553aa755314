"""The chunk store on disk: :class:`FileChunkStore` (layout and write protocol: diskio.py).

Besides its chunk files, the store serves chunks a download wrote into a file of the user's
(:meth:`FileChunkStore.keep`): a :class:`FileRef` (path, offset, size) instead of a second copy,
as BitTorrent clients seed from the downloaded file. While the download runs the reference
points into its part file and lives in memory; once the file has its name
(:meth:`FileChunkStore.kept_file_moved`) it is saved in SQLite with the file's identity
(device, inode, size, modification time). A reference is used only while the file keeps that
identity, and its bytes are hashed as they are read: a file the user changed, moved or deleted
stops being served, and the integrity scan reports its chunks lost. A reference takes none of
the store's quota. A chunk file, when there is one, is always preferred.

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
import hashlib
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from p2pshare.core.errors import IntegrityError, NotFound
from p2pshare.core.ids import validate_id
from p2pshare.storage import diskio
from p2pshare.storage.chunkstore import (
    DEFAULT_MAX_CHUNK_SIZE,
    READ_PIECE,
    ChunkReader,
    ChunkStore,
    ChunkWriter,
    Clock,
    ScanReport,
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
        self._refs: dict[str, FileRef] = {}
        self._broken: set[str] = set()
        self._broken_found = asyncio.Event()

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
        store._refs = {r.chunk_id: r for r in opened.refs}
        try:
            await store.expire()
        except BaseException:
            await store.close()
            raise
        log.info(
            "opened chunk store %s: %d chunks (and %d in downloaded files), %d bytes used of %d, "
            "%d orphaned temp files removed",
            root,
            opened.chunks,
            len(opened.refs),
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

    # -- chunks served from downloaded files ------------------------------------------------

    async def keep(
        self, chunk_id: str, data: bytes | bytearray | memoryview, *, at: tuple[Path, int] | None
    ) -> None:
        """Keep chunk ``chunk_id`` to serve others: a reference to the range of ``at`` (file,
        offset) that holds it, kept in memory until :meth:`kept_file_moved`; a cache copy
        (see :meth:`ChunkStore.keep`) when ``at`` is None. Nothing when a chunk file exists."""
        validate_id(chunk_id, "chunk id")
        if at is None:
            await super().keep(chunk_id, data, at=None)
            return
        if await self._size_of(chunk_id) is not None:
            return
        path, offset = at
        self._refs[chunk_id] = FileRef(chunk_id, str(path), offset, len(data), None)

    async def kept_file_moved(self, old: Path, new: Path) -> None:
        """The file at ``old`` is complete and named ``new``: its references follow it, with
        its identity, and are saved (a restart keeps them)."""
        identity = await asyncio.to_thread(_identity_of, new)
        if identity is None:
            return
        moved = [
            replace(r, path=str(new), identity=identity)
            for r in self._refs.values()
            if r.path == str(old)
        ]
        for ref in moved:
            self._refs[ref.chunk_id] = ref
        await asyncio.to_thread(self._db.put_refs, [r.row() for r in moved])

    def referenced(self, chunk_id: str) -> bool:
        """Return whether chunk ``chunk_id`` would be served from a downloaded file (no I/O)."""
        return chunk_id in self._refs

    async def _created(self, chunk_id: str) -> None:
        """A chunk file was written: it replaces a reference to the chunk."""
        if chunk_id in self._refs:
            await self._drop_refs([chunk_id])

    async def has(self, chunk_id: str) -> bool:
        """Return whether chunk ``chunk_id`` is stored, or served from a file still unchanged."""
        if await super().has(chunk_id):
            return True
        return await self._usable_ref(chunk_id) is not None

    async def size(self, chunk_id: str) -> int:
        """Return the bytes of chunk ``chunk_id`` (a chunk file's or a reference's)."""
        try:
            return await super().size(chunk_id)
        except NotFound:
            ref = await self._usable_ref(chunk_id)
            if ref is None:
                raise
            return ref.size

    async def delete(self, chunk_id: str) -> None:
        """Remove chunk ``chunk_id``: its file (freeing its bytes) and any reference."""
        try:
            await super().delete(chunk_id)
        except NotFound:
            if chunk_id not in self._refs:
                raise
        if chunk_id in self._refs:
            await self._drop_refs([chunk_id])

    async def list(self) -> list[str]:
        """Return the ids of the stored chunks and of those served from files, sorted."""
        return sorted({*await super().list(), *self._refs})

    async def scan(self) -> ScanReport:
        """As :meth:`ChunkStore.scan`, then the references: one whose file changed, or whose
        bytes no longer hash to its chunk, is dropped and reported with the quarantined."""
        report = await super().scan()
        checked, lost = report.checked, list(report.quarantined)
        for ref in [r for r in self._refs.values() if r.identity is not None]:
            if self._refs.get(ref.chunk_id) is not ref:
                continue
            checked += 1
            if await asyncio.to_thread(_ref_intact, ref):
                continue
            await self._drop_refs([ref.chunk_id])
            lost.append(ref.chunk_id)
            log.warning("chunk %s: %s changed, no longer served from it", ref.chunk_id, ref.path)
        return ScanReport(checked, tuple(lost))

    async def _usable_ref(self, chunk_id: str) -> FileRef | None:
        """Return the reference of ``chunk_id`` when its file is unchanged; drop it if not."""
        ref = self._refs.get(validate_id(chunk_id, "chunk id"))
        if ref is None:
            return None
        if ref.identity is None or await asyncio.to_thread(_identity_of, Path(ref.path)) == (
            ref.identity
        ):
            return ref
        await self._file_broken(ref.path)
        return None

    async def broken_refs(self) -> list[str]:
        """Wait until chunks served from downloaded files are found gone when used (the file
        changed, moved or was deleted, or a range no longer hashes to its chunk); return their
        ids, each once, so the caller can tell the tracker now rather than at the next
        integrity scan (which reports what it finds itself)."""
        await self._broken_found.wait()
        self._broken_found.clear()
        broken, self._broken = sorted(self._broken), set()
        return broken

    # -- lost chunks not reported yet (node.heartbeat.LostReporter) ----------------------------
    # A record the reporter keeps so that a restart does not lose a report. It is a help, not
    # a condition: when the database cannot be used the failure is logged and the report goes
    # on from memory, as it would with no record (an audit then finds what a restart forgot).

    async def lost_unreported(self) -> list[str]:
        """Return the chunks kept by :meth:`lost_kept` and not yet :meth:`lost_reported`, but
        not those this store holds again (a repair may have brought one back): those are
        forgotten."""
        try:
            ids = await asyncio.to_thread(self._db.load_lost)
        except (OSError, sqlite3.Error) as exc:
            log.warning("could not read the lost chunks not yet reported: %s", exc)
            return []
        held = {cid for cid in ids if await self.has(cid)}
        if held:
            await self.lost_reported(sorted(held))
        return [cid for cid in ids if cid not in held]

    async def lost_kept(self, chunk_ids: list[str]) -> None:
        """Remember on disk that ``chunk_ids`` are lost and the tracker has not taken them."""
        await self._lost_record(self._db.add_lost, chunk_ids)

    async def lost_reported(self, chunk_ids: list[str]) -> None:
        """Forget ``chunk_ids``: the tracker took the report (or refused it for good)."""
        await self._lost_record(self._db.delete_lost, chunk_ids)

    async def _lost_record(self, change: Callable[[list[str]], None], chunk_ids: list[str]) -> None:
        try:
            await asyncio.to_thread(change, chunk_ids)
        except (OSError, sqlite3.Error) as exc:
            log.warning(
                "could not record %d lost chunks as waiting or reported: %s", len(chunk_ids), exc
            )

    async def _file_broken(self, path: str) -> None:
        """The file at ``path`` no longer has its identity (or cannot be opened): none of the
        references into it can be used."""
        ids = [c for c, r in self._refs.items() if r.path == path]
        log.info("%s changed or is gone: %d chunks no longer served from it", path, len(ids))
        await self._ref_broken(ids)

    async def _ref_broken(self, chunk_ids: list[str]) -> None:
        await self._drop_refs(chunk_ids)
        self._broken.update(chunk_ids)
        self._broken_found.set()

    async def _drop_refs(self, chunk_ids: list[str]) -> None:
        saved = [c for c in chunk_ids if (r := self._refs.pop(c, None)) and r.identity]
        if saved:
            await asyncio.to_thread(self._db.delete_refs, saved)

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
        if opened is not None:
            fd, size = opened
            return _FileReader(chunk_id, size, fd)
        ref = self._refs.get(chunk_id)
        if ref is None:
            return None
        fd = await asyncio.to_thread(_open_ref, ref)
        if fd is None:
            if ref.identity is None:
                # a part file still being written, or renamed a moment before its references
                # follow it (kept_file_moved): only this one is dropped, and nothing is lost
                await self._drop_refs([chunk_id])
            else:
                await self._file_broken(ref.path)
            return None
        return _RefReader(ref, fd, self._ref_broken)

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

    def fileno(self) -> int:
        return self._fd

    def read_into(self, into: memoryview) -> int:
        # by direct I/O where allowed: a chunk pushed over TLS (a plain connection takes
        # fileno() and sendfile) does not fill the page cache
        if self._blocks is None:
            self._blocks = diskio.BlockFile(self._fd, direct=diskio.try_direct(self._fd))
        n = self._blocks.read_into(into, self._offset)
        self._offset += n
        return n

    def rewind(self) -> bool:
        self._offset = 0
        return True

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
    refs: list[FileRef]


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
        refs = [FileRef(*row) for row in db.load_refs()]
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
        refs=refs,
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


# --- references into downloaded files --------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """A chunk served from a range of a downloaded file."""

    chunk_id: str
    path: str
    offset: int
    size: int
    identity: str | None
    """the file's ``device:inode:size:mtime_ns`` when it got its name; None while it is the
    download's part file (still being written)"""

    def row(self) -> tuple[str, str, int, int, str]:
        assert self.identity is not None
        return (self.chunk_id, self.path, self.offset, self.size, self.identity)


def _identity_of(path: Path) -> str | None:
    """Return ``device:inode:size:mtime_ns`` of the file at ``path``, or None when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _open_ref(ref: FileRef) -> int | None:
    """Open the file of ``ref`` when it still has its identity; return the descriptor."""
    try:
        fd = os.open(ref.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    if (ref.identity is not None and identity != ref.identity) or (
        st.st_size < ref.offset + ref.size
    ):
        os.close(fd)
        return None
    return fd


def _ref_intact(ref: FileRef) -> bool:
    """Return whether the file of ``ref`` has its identity and the range hashes to the chunk."""
    fd = _open_ref(ref)
    if fd is None:
        return False
    try:
        digest = hashlib.sha256()
        done = 0
        while done < ref.size:
            piece = os.pread(fd, min(READ_PIECE, ref.size - done), ref.offset + done)
            if not piece:
                return False
            digest.update(piece)
            done += len(piece)
        return digest.hexdigest() == ref.chunk_id
    finally:
        os.close(fd)


class _RefReader(ChunkReader):
    """Reads a chunk from its range of a downloaded file, hashing it on the way: bytes that no
    longer match the chunk end the read with :class:`IntegrityError` (and drop the reference),
    so a peer gets a cut transfer rather than a wrong chunk in full."""

    def __init__(self, ref: FileRef, fd: int, drop: Callable[[list[str]], Awaitable[None]]) -> None:
        super().__init__(ref.chunk_id, ref.size)
        self._ref = ref
        self._fd = fd
        self._drop = drop
        self._done = 0
        self._hash = hashlib.sha256()
        self._finalizer = weakref.finalize(self, os.close, fd)

    def _read(self) -> bytes:
        """Blocking: return the next piece of the range (b"" at its end), checked."""
        want = min(self.size - self._done, READ_PIECE)
        if want <= 0:
            return b""
        piece = os.pread(self._fd, want, self._ref.offset + self._done)
        self._took(piece)
        return piece

    def read_into(self, into: memoryview) -> int:
        want = min(self.size - self._done, len(into))
        if want <= 0:
            return 0
        n = os.preadv(self._fd, [into[:want]], self._ref.offset + self._done)
        self._took(into[:n])
        return n

    def rewind(self) -> bool:
        self._done = 0
        self._hash = hashlib.sha256()
        return True

    def _took(self, got: bytes | memoryview) -> None:
        """Count and hash ``got``; raise :class:`IntegrityError` when the file ends early or,
        at the end of the range, the bytes are not the chunk."""
        if not got:
            raise IntegrityError(f"{self._ref.path} ends before chunk {self.chunk_id}")
        self._hash.update(got)
        self._done += len(got)
        if self._done == self.size and self._hash.hexdigest() != self.chunk_id:
            raise IntegrityError(f"{self._ref.path} no longer holds chunk {self.chunk_id}")

    async def _read_piece(self) -> bytes:
        try:
            return await asyncio.to_thread(self._read)
        except IntegrityError:
            await self._drop([self.chunk_id])
            raise

    async def _close(self) -> None:
        self._finalizer.detach()
        await asyncio.to_thread(os.close, self._fd)
