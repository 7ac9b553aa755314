"""Locks that keep writers of one chunk apart: in this process, across processes, per directory.

- :class:`KeyedLock`: one :class:`asyncio.Lock` per key (chunk id), dropped when nobody holds or
  waits for it, so the dict does not grow with every chunk ever touched.
- :class:`RecordLocks`: POSIX record locks (``fcntl.lockf``) on one byte per chunk of a single
  lock file, for exclusion between processes that share a data directory. POSIX record locks
  belong to the *process*: two tasks of one process would both "get" the same byte, so the
  in-process :class:`KeyedLock` is always taken first; and closing *any* descriptor of the lock
  file drops all of the process's locks on it, so the file is opened once and kept open.
  Acquiring polls with ``LOCK_NB`` and an asyncio sleep between tries: a non-blocking attempt
  returns at once, and a waiting task stays cancellable without a thread left behind holding a
  lock nobody will release.
- :class:`DirLock`: an exclusive ``flock`` on ``DATA/store.lock`` for "one node process per data
  directory"; flock locks belong to the open file, so even a second open in the same process is
  refused.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from p2pshare.core.errors import StoreLocked

_RETRY_FIRST = 0.001
_RETRY_MAX = 0.05


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class KeyedLock:
    """An :class:`asyncio.Lock` per key, created on first use and removed after last use."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        """Return how many keys are held or waited for right now."""
        return len(self._slots)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the body of the ``async with``."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[key]


def chunk_offset(key: str) -> int:
    """Return the byte of the lock file that stands for chunk id ``key`` (60 bits of it)."""
    return int(key[:15], 16)


class RecordLocks:
    """One-byte ``fcntl`` record locks on one lock file, one byte per chunk id.

    Build it with :meth:`open` (blocking) and close it with :meth:`close` (blocking).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> RecordLocks:
        """Return the locks on the file at ``path``, created when missing (blocking)."""
        return cls(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))

    def close(self) -> None:
        """Close the lock file, which releases every lock this process holds on it."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def try_acquire(self, key: str) -> bool:
        """Take the lock of ``key`` if no other process holds it; return whether it was taken.

        Never waits: this is a non-blocking ``fcntl`` call, safe on the event loop thread.
        """
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, chunk_offset(key))
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def release(self, key: str) -> None:
        """Release the lock of ``key`` (non-blocking)."""
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, chunk_offset(key))

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the body of the ``async with``, waiting as long as needed.

        The caller must hold the in-process lock of ``key`` already (see the module docstring).
        """
        delay = _RETRY_FIRST
        while not self.try_acquire(key):
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
        try:
            yield
        finally:
            self.release(key)


class DirLock:
    """An exclusive lock on a whole data directory, held until :meth:`close` (blocking calls)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> DirLock:
        """Lock the file at ``path`` (created when missing) and return the held lock.

        Raises :class:`StoreLocked` when another holder has it.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise StoreLocked(
                    f"{path.parent} is in use by another p2pshare process "
                    f"(lock file {path}); run one node per data directory"
                ) from None
            raise
        return cls(fd)

    def close(self) -> None:
        """Release the lock."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
