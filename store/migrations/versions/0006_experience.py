"""Recorded experience: models whose environment lives with their clients (env_id nullable), a model's recording
settings and dropped count, and the experience_chunks table (compressed blocks of transitions). Additive, except
that models.env_id stops being NOT NULL.

SQLite cannot drop a NOT NULL constraint with ALTER, and rebuilding `models` (batch mode) would fire the ON DELETE
actions of every table that references it. SQLite documents a procedure for exactly this change, which leaves the
stored rows as they are: rewrite the table's CREATE statement in the schema table under `writable_schema`, then bump
the schema version (https://www.sqlite.org/lang_altertable.html#otheralter, "removing ... NOT NULL constraints").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.tables.base import JSONDict, UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOUBLE = sa.Float(precision=53)
_ENV_ID_NOT_NULL = re.compile(r"(env_id\s+VARCHAR\(200\))\s+NOT NULL", re.IGNORECASE)


def _env_id_nullable() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        op.alter_column("models", "env_id", existing_type=sa.String(200), nullable=True)
        return
    (create,) = connection.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'models'")
    ).one()
    relaxed = _ENV_ID_NOT_NULL.sub(r"\1", create, count=1)
    if relaxed == create:
        return
    (version,) = connection.execute(sa.text("PRAGMA schema_version")).one()
    connection.execute(sa.text("PRAGMA writable_schema = ON"))
    connection.execute(
        sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'models'"), {"sql": relaxed}
    )
    connection.execute(sa.text(f"PRAGMA schema_version = {int(version) + 1}"))
    connection.execute(sa.text("PRAGMA writable_schema = OFF"))


def upgrade() -> None:
    _env_id_nullable()
    op.add_column("models", sa.Column("experience", JSONDict, nullable=True))
    op.add_column("models", sa.Column("experience_dropped", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "experience_chunks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("flush_id", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("first_time", DOUBLE, nullable=False),
        sa.Column("last_time", DOUBLE, nullable=False),
        sa.Column("transitions", sa.Integer(), nullable=False),
        sa.Column("episodes", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("policy_counts", JSONDict, nullable=False),
        sa.Column("returns", JSONDict, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("storage_key", sa.String(500), nullable=True),
    )
    op.create_index("ix_experience_chunks_model_id_id", "experience_chunks", ["model_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_experience_chunks_model_id_id", table_name="experience_chunks")
    op.drop_table("experience_chunks")
    op.drop_column("models", "experience_dropped")
    op.drop_column("models", "experience")
    # env_id stays nullable: models without an environment may exist by now.
