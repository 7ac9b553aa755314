"""Alembic migrations, applied programmatically when the tracker starts.

The scripts live in this package (``p2pshare.tracker:migrations``) so a wheel install has
them. Reading them is blocking file I/O, so :func:`load_scripts` runs in a worker thread; the
upgrade itself then runs on the tracker's own async engine through ``connection.run_sync``,
inside one transaction (SQLite DDL is transactional here, see :mod:`.db`).

For developers: ``migrations/env.py`` lets the ``alembic`` command make new revisions
(``alembic -c alembic.ini revision --autogenerate``, with ``script_location =
p2pshare.tracker:migrations`` and ``sqlalchemy.url`` in that ini file).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from p2pshare.tracker.db import Database
from p2pshare.tracker.models import Base

SCRIPT_LOCATION = "p2pshare.tracker:migrations"
log = logging.getLogger(__name__)


def alembic_config() -> Config:
    """Return an Alembic config that points at the packaged migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


def load_scripts(cfg: Config) -> ScriptDirectory:
    """Return the migration scripts, every revision already loaded (blocking: use a thread)."""
    script = ScriptDirectory.from_config(cfg)
    script.revision_map.get_revisions("heads")  # imports every revision module now
    return script


def _upgrade(connection: Connection, cfg: Config, script: ScriptDirectory, target: str) -> None:
    def step(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(target, rev)  # what alembic.command.upgrade runs

    with EnvironmentContext(cfg, script, fn=step, destination_rev=target, as_sql=False) as env:
        env.configure(connection=connection, target_metadata=Base.metadata)
        with env.begin_transaction():
            env.run_migrations()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(db: Database, target: str = "head") -> str | None:
    """Bring the schema of ``db`` to ``target``; return the revision it is at afterwards."""
    cfg = alembic_config()
    script = await asyncio.to_thread(load_scripts, cfg)
    async with db.engine.begin() as conn:
        before = await conn.run_sync(_current)
        await conn.run_sync(_upgrade, cfg, script, target)
        after = await conn.run_sync(_current)
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    return after


def run_env() -> None:  # pragma: no cover - used by the alembic command only
    """Body of ``migrations/env.py``: run migrations for the ``alembic`` command line."""
    from alembic import context
    from sqlalchemy.ext.asyncio import create_async_engine

    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("set sqlalchemy.url in the alembic ini file")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(main())
