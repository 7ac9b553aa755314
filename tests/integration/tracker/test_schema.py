"""The Alembic migrations build exactly the schema the ORM models describe."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from p2pshare.tracker.db import Database
from p2pshare.tracker.migrate import upgrade
from p2pshare.tracker.models import Base


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    db = await asyncio.to_thread(Database.open, f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    try:
        assert await upgrade(db) == "0001"
        assert await upgrade(db) == "0001"
    finally:
        await db.close()


def test_migrations_match_models(tmp_path: Path) -> None:
    path = tmp_path / "t.db"

    async def migrate() -> None:
        db = await asyncio.to_thread(Database.open, f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade(db)
        finally:
            await db.close()

    asyncio.run(migrate())
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
