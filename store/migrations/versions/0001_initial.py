"""Initial schema: jobs, episodes, evaluations, policies, serving_state.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from store.tables.base import JSONDict, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOUBLE = sa.Float(precision=53)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # jobs.policy_id and policies.source_job_id point at each other. SQLite accepts a foreign key to a table
    # that does not exist yet (and cannot ALTER one in later), PostgreSQL needs the table first.
    job_policy_fk = (
        [sa.ForeignKeyConstraint(["policy_id"], ["policies.id"], name="fk_jobs_policy_id", ondelete="SET NULL")]
        if sqlite
        else []
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", JSONDict, nullable=False),
        sa.Column("promote", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("policy_id", sa.Integer(), nullable=True),
        sa.Column("episodes_total", sa.Integer(), nullable=True),
        sa.Column("episodes_done", sa.Integer(), nullable=False),
        sa.Column("env_steps", sa.Integer(), nullable=False),
        sa.Column("last_return", DOUBLE, nullable=True),
        sa.Column("best_eval_return", DOUBLE, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="ck_jobs_status"
        ),
        sa.CheckConstraint("promote IN ('if_better', 'always', 'never')", name="ck_jobs_promote"),
        *job_policy_fk,
    )
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"])

    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column("meta", JSONDict, nullable=False),
        sa.Column("env_id", sa.String(200), nullable=False),
        sa.Column("obs_dim", sa.Integer(), nullable=False),
        sa.Column("act_dim", sa.Integer(), nullable=False),
        sa.Column("eval_mean_return", DOUBLE, nullable=True),
        sa.Column("source_job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_index("ix_policies_sha256", "policies", ["sha256"])
    if not sqlite:
        op.create_foreign_key("fk_jobs_policy_id", "jobs", "policies", ["policy_id"], ["id"], ondelete="SET NULL")

    for name in ("episodes", "evaluations"):
        value_columns = (
            [sa.Column("episode_return", DOUBLE, nullable=False), sa.Column("avg_return_10", DOUBLE, nullable=False)]
            if name == "episodes"
            else [sa.Column("mean_return", DOUBLE, nullable=False), sa.Column("std_return", DOUBLE, nullable=False)]
        )
        op.create_table(
            name,
            sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("episode", sa.Integer(), primary_key=True, autoincrement=False),
            *value_columns,
            sa.Column("env_steps", sa.Integer(), nullable=False),
            sa.Column("wall_time", DOUBLE, nullable=False),
        )

    serving_state = op.create_table(
        "serving_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("default_policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="SET NULL"), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_serving_state_single_row"),
    )
    # The one row exists from the start, so promotion is always a plain UPDATE of it.
    op.bulk_insert(serving_state, [{"id": 1, "default_policy_id": None, "version": 0, "updated_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("serving_state")
    op.drop_table("evaluations")
    op.drop_table("episodes")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_jobs_policy_id", "jobs", type_="foreignkey")
    op.drop_table("policies")
    op.drop_table("jobs")
