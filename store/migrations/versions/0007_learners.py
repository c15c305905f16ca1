"""Online learners: the learners table (a leased queue, one live learner per model) and the policies each published;
rollouts.min_improvement (promotion on live evidence). Additive only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.tables.base import JSONDict, UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a migration must give the same result whenever it runs.
STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"
PUBLISH_MODES = "publish IN ('champion', 'canary')"
LIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    op.add_column("rollouts", sa.Column("min_improvement", sa.Float(precision=53), nullable=True))
    op.create_table(
        "learners",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", JSONDict, nullable=False),
        sa.Column("publish_every", sa.Integer(), nullable=False),
        sa.Column("publish", sa.String(16), nullable=False),
        sa.Column("canary", JSONDict, nullable=True),
        sa.Column("exploration", JSONDict, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("transitions_consumed", sa.Integer(), nullable=False),
        sa.Column("updates", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("publishes", sa.Integer(), nullable=False),
        sa.Column("progress_at", UTCDateTime(), nullable=True),
        sa.Column("last_publish_at", UTCDateTime(), nullable=True),
        sa.Column("last_policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="SET NULL"), nullable=True),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint(STATUSES, name="ck_learners_status"),
        sa.CheckConstraint(PUBLISH_MODES, name="ck_learners_publish"),
    )
    op.create_index("ix_learners_model_id", "learners", ["model_id"])
    op.create_index("ix_learners_status_created_at", "learners", ["status", "created_at"])
    op.create_index(
        "uq_learners_live_model",
        "learners",
        ["model_id"],
        unique=True,
        sqlite_where=sa.text(LIVE),
        postgresql_where=sa.text(LIVE),
    )
    op.create_table(
        "learner_publications",
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("learner_id", sa.Integer(), sa.ForeignKey("learners.id", ondelete="CASCADE"), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.Column("updates", sa.Integer(), nullable=False),
        sa.Column("transitions_consumed", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
    )
    op.create_index("ix_learner_publications_learner_id", "learner_publications", ["learner_id"])


def downgrade() -> None:
    op.drop_index("ix_learner_publications_learner_id", "learner_publications")
    op.drop_table("learner_publications")
    op.drop_index("uq_learners_live_model", "learners")
    op.drop_index("ix_learners_status_created_at", "learners")
    op.drop_index("ix_learners_model_id", "learners")
    op.drop_table("learners")
    op.drop_column("rollouts", "min_improvement")
