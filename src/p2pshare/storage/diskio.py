"""The blocking half of the file chunk store: layout, atomic writes, listing, hashing, quarantine.

Every function here blocks on the disk; the store calls them through :func:`asyncio.to_thread`
and nothing else in the package touches chunk files. The layout of a data directory::

    DATA/chunks/ab/abcdef...          one file per chunk, named by its full 64-hex id
    DATA/chunks/ab/.abcdef....<uuid>.tmp   a write in progress (or orphaned by a crash)
    DATA/quarantine/<id>.<time>       chunks whose bytes no longer match their id
    DATA/chunks.lock                  per-chunk record locks (see locks.py)
    DATA/store.lock                   the whole-directory lock, when taken
    DATA/reservations.sqlite3         reservations (see reservation_db.py)

A write goes to a temp file with a unique name in the chunk's own directory, is hashed as it is
written, fsynced, renamed over the final name, and the directory is fsynced: after a crash a
chunk is either whole under its name or absent, and the temp file is swept by the next open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

from p2pshare.core.ids import is_valid_id

CHUNKS_DIR = "chunks"
QUARANTINE_DIR = "quarantine"
TMP_SUFFIX = ".tmp"
HASH_PIECE = 1024 * 1024


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

    def start(self) -> None:
        """Create the fan-out directory when needed and the temp file."""
        fanout = self.final.parent
        if not fanout.is_dir():
            with contextlib.suppress(FileExistsError):
                fanout.mkdir()
                fsync_dir(fanout.parent)
        self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, piece: bytes) -> None:
        """Hash ``piece`` (unless made with ``hashing=False``) and append it to the temp file."""
        if self._hash is not None:
            self._hash.update(piece)
        view = memoryview(piece)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def finish(self) -> str:
        """Flush the data to disk, close the temp file and return the SHA-256 hex of the bytes
        ("" when made with ``hashing=False``). With ``durable=False`` nothing is flushed: the
        kernel writes the bytes back when it likes (a cache copy, see ChunkStore.put)."""
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
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if not self.published:
            with contextlib.suppress(FileNotFoundError):
                self.temp.unlink()
