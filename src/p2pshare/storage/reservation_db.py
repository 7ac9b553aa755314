"""Reservations kept on disk in ``DATA/reservations.sqlite3``, so a restart keeps its promises;
the file references of the chunks this node serves from downloaded files (``refs``); and the
chunks it lost that the tracker has not been told of yet (``lost``), so a restart tells it.

Every method blocks (SQLite): call it through :func:`asyncio.to_thread`. One connection is
shared by the worker threads, guarded by a :class:`threading.Lock`. WAL journal with
``synchronous=FULL``: a reservation is on disk before the call that made it returns.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from p2pshare.storage.ledger import Reservation

FILE_NAME = "reservations.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY,
    upload_id      TEXT NOT NULL,
    nbytes         INTEGER NOT NULL CHECK (nbytes > 0),
    used           INTEGER NOT NULL CHECK (used >= 0),
    expires_at     REAL NOT NULL
)
"""
_REFS_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    chunk_id  TEXT PRIMARY KEY,
    path      TEXT NOT NULL,
    offset    INTEGER NOT NULL CHECK (offset >= 0),
    size      INTEGER NOT NULL CHECK (size > 0),
    identity  TEXT NOT NULL
)
"""

_LOST_SCHEMA = """
CREATE TABLE IF NOT EXISTS lost (
    chunk_id  TEXT PRIMARY KEY
)
"""

_OPEN_ATTEMPTS = 100
_OPEN_RETRY_DELAY = 0.02


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        with conn:
            conn.execute(_SCHEMA)
            conn.execute(_REFS_SCHEMA)
            conn.execute(_LOST_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


class ReservationDB:
    """The reservation table of one data directory. Open it with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path) -> ReservationDB:
        """Return the database in ``data_dir``, creating the file and table when missing.

        Two processes opening a fresh directory at once can meet SQLite's deadlock guard,
        which answers SQLITE_BUSY at once instead of waiting (switching to WAL needs an
        exclusive lock); the open is retried a bounded number of times (about 2 s in all).
        """
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                return cls(_connect(data_dir / FILE_NAME))
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or attempt == _OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(_OPEN_RETRY_DELAY)
        raise AssertionError("unreachable")  # pragma: no cover

    def load(self) -> list[Reservation]:
        """Return every stored reservation, lapsed or not."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reservation_id, upload_id, nbytes, used, expires_at FROM reservations"
            ).fetchall()
        return [Reservation(*row) for row in rows]

    def insert(self, reservation: Reservation) -> None:
        """Store a new reservation."""
        r = reservation
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO reservations VALUES (?, ?, ?, ?, ?)",
                (r.reservation_id, r.upload_id, r.nbytes, r.used, r.expires_at),
            )

    def set_used(self, reservation_id: str, used: int) -> None:
        """Record that ``used`` bytes of the reservation hold stored chunks."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE reservations SET used = ? WHERE reservation_id = ?",
                (used, reservation_id),
            )

    def delete(self, reservation_ids: Iterable[str]) -> None:
        """Forget the given reservations (unknown ids are ignored)."""
        with self._lock, self._conn:
            self._conn.executemany(
                "DELETE FROM reservations WHERE reservation_id = ?",
                [(rid,) for rid in reservation_ids],
            )

    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""
        with self._lock:
            self._conn.close()

    # -- file references (storage.filestore.FileRef) -----------------------------------------

    def load_refs(self) -> list[tuple[str, str, int, int, str]]:
        """Return every stored reference: (chunk id, path, offset, size, identity)."""
        with self._lock:
            return self._conn.execute(
                "SELECT chunk_id, path, offset, size, identity FROM refs"
            ).fetchall()

    def put_refs(self, rows: Iterable[tuple[str, str, int, int, str]]) -> None:
        """Store references (replacing those of the same chunks), in one transaction."""
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?, ?)", rows)

    def delete_refs(self, chunk_ids: Iterable[str]) -> None:
        """Forget the references of ``chunk_ids`` (those stored)."""
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM refs WHERE chunk_id = ?", [(c,) for c in chunk_ids])

    # -- lost chunks not reported yet (node.heartbeat.LostReporter) ----------------------------

    def load_lost(self) -> list[str]:
        """Return the ids of the lost chunks the tracker has not taken yet, sorted."""
        with self._lock:
            rows = self._conn.execute("SELECT chunk_id FROM lost ORDER BY chunk_id").fetchall()
        return [row[0] for row in rows]

    def add_lost(self, chunk_ids: Iterable[str]) -> None:
        """Remember ``chunk_ids`` as lost and not reported yet, in one transaction."""
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO lost VALUES (?)", [(c,) for c in chunk_ids]
            )

    def delete_lost(self, chunk_ids: Iterable[str]) -> None:
        """Forget ``chunk_ids`` (reported, or held again); unknown ids are ignored."""
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM lost WHERE chunk_id = ?", [(c,) for c in chunk_ids])
