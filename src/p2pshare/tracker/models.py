"""The tables, as SQLAlchemy 2 typed ORM classes.

Replicas are content-addressed: a row says that a node holds a chunk id, and so holds it for
every file that contains that chunk. ``chunks`` maps a file's positions to chunk ids (a file
may contain the same chunk id more than once). The schema is created and changed only by the
Alembic migrations in ``migrations/versions``; a test checks that they match these classes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID_LEN = 64
NAME_LEN = 255
ADDRESS_LEN = 255

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps no zone: it is added back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store ``value`` as UTC; refuse a naive datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return ``value`` as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of every table; constraint names follow :data:`NAMING`."""

    metadata = MetaData(naming_convention=NAMING)


class Node(Base):
    """A node that announced itself at least once. ``status`` is written behind (see liveness)."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(ADDRESS_LEN))
    offered_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger)
    free_bytes: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index(None, "status", "free_bytes"),)


class File(Base):
    """A registered file. ``manifest`` is its canonical JSON; the id and owner never change."""

    __tablename__ = "files"

    file_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[str] = mapped_column(Text, deferred=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"))
    replica_target: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index(None, "state", "created"),
        Index(None, "owner_id"),
    )


class Chunk(Base):
    """Position ``index`` of a file holds chunk ``chunk_id``."""

    __tablename__ = "chunks"

    file_id: Mapped[str] = mapped_column(
        ForeignKey("files.file_id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(ID_LEN))

    __table_args__ = (Index(None, "chunk_id"),)


class Replica(Base):
    """Node ``node_id`` holds chunk ``chunk_id`` (for every file that contains it)."""

    __tablename__ = "replicas"

    chunk_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    verified_ok: Mapped[bool] = mapped_column(Boolean)
    last_verified: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index(None, "node_id"),)


class Leecher(Base):
    """Node ``node_id`` is (``active``) or was downloading ``file_id``."""

    __tablename__ = "leechers"

    file_id: Mapped[str] = mapped_column(
        ForeignKey("files.file_id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean)
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    stopped: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Event(Base):
    """One line of history: a registration, a download, a report, a withdrawal."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))
    file_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    peer_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    nbytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index(None, "file_id", "id"), Index(None, "node_id", "id"))
