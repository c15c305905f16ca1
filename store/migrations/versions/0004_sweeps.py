"""Sweeps: the sweeps table (also the sweep runners' queue) and sweep_trials, linking each trial to its job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.tables.base import JSONDict, UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOUBLE = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("base", JSONDict, nullable=False),
        sa.Column("space", JSONDict, nullable=False),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("search", sa.String(16), nullable=False),
        sa.Column("early_stop", sa.String(16), nullable=True),
        sa.Column("promote", sa.String(16), nullable=False),
        sa.Column("max_failures", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("runner_id", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("best_job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="SET NULL"), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="ck_sweeps_status"
        ),
        sa.CheckConstraint("promote IN ('if_better', 'always', 'never')", name="ck_sweeps_promote"),
        sa.CheckConstraint("search IN ('tpe', 'random', 'grid')", name="ck_sweeps_search"),
        sa.CheckConstraint("early_stop IS NULL OR early_stop IN ('asha')", name="ck_sweeps_early_stop"),
    )
    op.create_index("ix_sweeps_status_created_at", "sweeps", ["status", "created_at"])

    op.create_table(
        "sweep_trials",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("params", JSONDict, nullable=False),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("node_ip", sa.String(64), nullable=True),
        sa.Column("heldout_return", DOUBLE, nullable=True),
        sa.Column("heldout_std", DOUBLE, nullable=True),
    )
    op.create_index("ux_sweep_trials_sweep_trial", "sweep_trials", ["sweep_id", "trial_id"], unique=True)


def downgrade() -> None:
    op.drop_table("sweep_trials")
    op.drop_table("sweeps")
