"""The first schema: nodes, files, chunks, replicas, leechers, events.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("offered_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("free_bytes", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", UTC_TS, nullable=False),
        sa.Column("last_seen", UTC_TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name="pk_nodes"),
    )
    op.create_index("ix_nodes_status_free_bytes", "nodes", ["status", "free_bytes"])

    op.create_table(
        "files",
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("replica_target", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created", UTC_TS, nullable=False),
        sa.Column("deleted_at", UTC_TS, nullable=True),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["nodes.node_id"], name="fk_files_owner_id_nodes"),
        sa.PrimaryKeyConstraint("file_id", name="pk_files"),
    )
    op.create_index("ix_files_state_created", "files", ["state", "created"])
    op.create_index("ix_files_owner_id", "files", ["owner_id"])

    op.create_table(
        "chunks",
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("chunk_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.file_id"], name="fk_chunks_file_id_files", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("file_id", "index", name="pk_chunks"),
    )
    op.create_index("ix_chunks_chunk_id", "chunks", ["chunk_id"])

    op.create_table(
        "replicas",
        sa.Column("chunk_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("since", UTC_TS, nullable=False),
        sa.Column("verified_ok", sa.Boolean(), nullable=False),
        sa.Column("last_verified", UTC_TS, nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.node_id"], name="fk_replicas_node_id_nodes"),
        sa.PrimaryKeyConstraint("chunk_id", "node_id", name="pk_replicas"),
    )
    op.create_index("ix_replicas_node_id", "replicas", ["node_id"])

    op.create_table(
        "leechers",
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("started", UTC_TS, nullable=False),
        sa.Column("stopped", UTC_TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.file_id"], name="fk_leechers_file_id_files", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.node_id"], name="fk_leechers_node_id_nodes"),
        sa.PrimaryKeyConstraint("file_id", "node_id", name="pk_leechers"),
    )

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=True),
        sa.Column("node_id", sa.String(64), nullable=True),
        sa.Column("peer_id", sa.String(64), nullable=True),
        sa.Column("nbytes", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_file_id_id", "events", ["file_id", "id"])
    op.create_index("ix_events_node_id_id", "events", ["node_id", "id"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("events", "leechers", "replicas", "chunks", "files", "nodes"):
        op.drop_table(table)
