"""Live returns written exactly once and bounded for the guard: the ids of recent flushes (a retried batch is
recognised) and the returns counted per bucket of a logarithmic scale (the guard's trimmed mean); existing models
of an environment with a known reward range declare it (in their `spaces`, as new models do). Additive only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from store.tables.base import JSONDict, UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOUBLE = sa.Float(precision=53)

# Written out rather than imported (models.reward_ranges): a migration must give the same result whenever it runs.
REWARD_RANGES: dict[str, list[float]] = {
    "Pendulum-v1": [-16.27360440108936, 0.0],
    "MountainCarContinuous-v0": [-0.1, 100.0],
}


def upgrade() -> None:
    op.create_table(
        "live_return_flushes",
        sa.Column("flush_id", sa.String(100), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_live_return_flushes_created_at", "live_return_flushes", ["created_at"])
    op.create_table(
        "live_return_buckets",
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("rollout_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("bucket", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("episodes", sa.Integer(), nullable=False),
        sa.Column("return_sum", DOUBLE, nullable=False),
    )
    models = sa.table("models", sa.column("id", sa.Integer()), sa.column("env_id"), sa.column("spaces", JSONDict))
    connection = op.get_bind()
    for model_id, env_id, spaces in connection.execute(sa.select(models.c.id, models.c.env_id, models.c.spaces)):
        if env_id in REWARD_RANGES and "reward_range" not in spaces:
            declared: dict[str, Any] = {**spaces, "reward_range": REWARD_RANGES[env_id]}
            connection.execute(models.update().where(models.c.id == model_id).values(spaces=declared))


def downgrade() -> None:
    op.drop_table("live_return_buckets")
    op.drop_table("live_return_flushes")
