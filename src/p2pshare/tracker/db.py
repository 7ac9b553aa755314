"""The database: one async engine, its sessions, and the rules every connection follows.

Any async SQLAlchemy URL works; the two that are tested are ``sqlite+aiosqlite:///FILE``
(the default, nothing else to install) and ``postgresql+asyncpg://...``. Plain ``sqlite://``
and ``postgresql://`` URLs are given their async driver.

SQLite connections get WAL, ``synchronous=FULL`` (a commit survives power loss, not just a
crash), a busy timeout and foreign keys. SQLAlchemy emits ``BEGIN`` itself instead of
``sqlite3``'s legacy mode, so reads see one snapshot and DDL is transactional. SQLite has one
writer at a time: :meth:`Database.write` queues writers in-process on an :class:`asyncio.Lock`
instead of letting them spin on the file lock (one tracker process per SQLite file).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from p2pshare.core.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(url: str) -> URL:
    """Return ``url`` parsed, with the async driver filled in for bare sqlite/postgresql URLs.

    Raises :class:`ConfigError` for a URL that does not parse or names a sync-only driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("database URL does not parse (try sqlite+aiosqlite:///FILE)") from None
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    if parsed.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
        raise ConfigError(
            f"database driver {parsed.drivername!r} is not supported; "
            "use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB"
        )
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """Return the file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if url.get_backend_name() != "sqlite" or url.database in {None, "", ":memory:"}:
        return None
    return Path(url.database)  # type: ignore[arg-type]


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_sqlite_begin)
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


NO_BEGIN = "p2pshare_no_begin"
"""Execution option: on SQLite, run without BEGIN, each statement its own snapshot."""


def _on_sqlite_begin(conn: Any) -> None:
    if not conn.get_execution_options().get(NO_BEGIN):
        conn.exec_driver_sql("BEGIN")


class Database:
    """The engine and session factory. Make one with :meth:`open`, end it with :meth:`close`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @classmethod
    def open(cls, url: str, **engine_kw: Any) -> Database:
        """Return a database for ``url`` (no connection is made until first use).

        Blocks briefly (SQLite resolves its file path): call it through ``asyncio.to_thread``
        from a running loop. Raises :class:`ConfigError` for an unsupported URL.
        """
        parsed = async_url(url)
        engine = create_async_engine(parsed, **engine_kw)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
            event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return cls(engine)

    @property
    def dialect(self) -> str:
        """Return the dialect name: ``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """Yield a session in one read transaction, so every query sees the same snapshot."""
        async with self.sessions() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def read_statements(self) -> AsyncIterator[AsyncConnection]:
        """Yield a connection for reads where each statement sees its own snapshot.

        On SQLite no BEGIN/COMMIT pair is sent, which saves round trips to the database
        thread (each one waits for a turn of the event loop); use it where the statements
        need not agree with each other. Other databases run them in one transaction.
        """
        async with self.engine.connect() as conn:
            await conn.execution_options(**{NO_BEGIN: True})
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """Yield a session in a write transaction, committed when the block ends without error.

        On SQLite, writers wait for each other here, so only one write transaction is open.
        """
        if self._write_lock is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self.sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
