"""Named models: models, their aliases, rollouts and live returns; policies and jobs belong to a model.

Existing data moves into models: Pendulum-v1 policies into the default model `pendulum` (created even when there
are none), any other environment's policies into a model named after it; the old default policy becomes its model's
`champion`. The serving row keeps only its version, now the registry's change counter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from models.registry_vocabulary import CHAMPION, DEFAULT_MODEL_ENV_ID, DEFAULT_MODEL_NAME, slug_for_env
from store.tables.base import JSONDict, UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOUBLE = sa.Float(precision=53)

# Written out rather than asked of gymnasium: a migration must give the same result wherever it runs.
PENDULUM_SPACES: dict[str, Any] = {
    "obs_dim": 3,
    "act_dim": 1,
    "observation_low": [-1.0, -1.0, -8.0],
    "observation_high": [1.0, 1.0, 8.0],
    "action_low": [-2.0],
    "action_high": [2.0],
}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    models = op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("env_id", sa.String(200), nullable=False),
        sa.Column("spaces", JSONDict, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("champion_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="SET NULL"), nullable=True),
        sa.Column("challenger_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("percent", DOUBLE, nullable=False),
        sa.Column("min_episodes", sa.Integer(), nullable=True),
        sa.Column("max_regression", DOUBLE, nullable=True),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("shadow_samples", sa.Integer(), nullable=False),
        sa.Column("shadow_divergence_sum", DOUBLE, nullable=False),
        sa.Column("shadow_latency_sum", DOUBLE, nullable=False),
        sa.CheckConstraint("mode IN ('shadow', 'canary')", name="ck_rollouts_mode"),
        sa.CheckConstraint("status IN ('active', 'promoted', 'rolled_back', 'ended')", name="ck_rollouts_status"),
        sa.CheckConstraint("percent >= 0 AND percent <= 100", name="ck_rollouts_percent"),
    )
    op.create_index(
        "uq_rollouts_active_model",
        "rollouts",
        ["model_id"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "live_returns",
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("rollout_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("episodes", sa.Integer(), nullable=False),
        sa.Column("return_sum", DOUBLE, nullable=False),
        sa.Column("return_sq_sum", DOUBLE, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )

    _add_model_reference("policies", sqlite)
    _add_model_reference("jobs", sqlite)
    op.create_index("ix_policies_model_id", "policies", ["model_id"])
    _move_policies_into_models(models)

    # The default policy is now the champion alias; the row keeps its version as the registry's change counter.
    with op.batch_alter_table("serving_state") as batch:
        batch.drop_column("default_policy_id")


def _add_model_reference(table: str, sqlite: bool) -> None:
    """A nullable model_id referencing models, with no ON DELETE action (models are never deleted)."""
    if sqlite:
        # A plain ADD COLUMN with its REFERENCES clause: batch mode would rebuild the table to add the constraint,
        # and dropping the old `policies` or `jobs` inside this transaction (foreign keys on) would fire the ON DELETE
        # actions of every table referencing it: episodes deleted, job links cleared.
        op.execute(f"ALTER TABLE {table} ADD COLUMN model_id INTEGER REFERENCES models (id)")
        return
    op.add_column(table, sa.Column("model_id", sa.Integer(), nullable=True))
    op.create_foreign_key(f"fk_{table}_model_id", table, "models", ["model_id"], ["id"])


def _move_policies_into_models(models: sa.Table) -> None:
    connection = op.get_bind()
    now = datetime.now(UTC)
    op.bulk_insert(
        models,
        [{"name": DEFAULT_MODEL_NAME, "env_id": DEFAULT_MODEL_ENV_ID, "spaces": PENDULUM_SPACES, "created_at": now}],
    )
    others = connection.execute(
        sa.text("SELECT DISTINCT env_id FROM policies WHERE env_id <> :env ORDER BY env_id"),
        {"env": DEFAULT_MODEL_ENV_ID},
    ).scalars()
    for env_id in list(others):
        # The spaces a policy's metadata knows; observation bounds are not in it, so they stay unknown (None).
        meta = connection.execute(
            sa.text("SELECT meta FROM policies WHERE env_id = :env ORDER BY id LIMIT 1"), {"env": env_id}
        ).scalar_one()
        meta = json.loads(meta) if isinstance(meta, str) else meta  # JSONB arrives decoded, SQLite's JSON as text
        obs_dim, act_dim = int(meta["obs_dim"]), int(meta["act_dim"])
        spaces = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "observation_low": [None] * obs_dim,
            "observation_high": [None] * obs_dim,
            "action_low": meta["action_low"],
            "action_high": meta["action_high"],
        }
        op.bulk_insert(models, [{"name": slug_for_env(env_id), "env_id": env_id, "spaces": spaces, "created_at": now}])
    connection.execute(
        sa.text("UPDATE policies SET model_id = (SELECT models.id FROM models WHERE models.env_id = policies.env_id)")
    )
    default_id = connection.execute(sa.text("SELECT default_policy_id FROM serving_state")).scalar()
    if default_id is not None:
        connection.execute(
            sa.text(
                "INSERT INTO model_aliases (model_id, alias, policy_id, updated_at) "
                "SELECT model_id, :alias, id, :now FROM policies WHERE id = :id"
            ),
            {"alias": CHAMPION, "id": default_id, "now": _bind_now(connection, now)},
        )


def _bind_now(connection: sa.Connection, now: datetime) -> Any:
    """`now` as the UTCDateTime column stores it on this database (naive UTC text on SQLite)."""
    return UTCDateTime().process_bind_param(now, connection.dialect)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Dropping model_id needs a rebuild of `policies` and `jobs` on SQLite, and dropping those tables inside the
        # migration's transaction (foreign keys on) would cascade into episodes, evaluations and job links.
        raise NotImplementedError("downgrading below 0003 is not supported on SQLite; restore a backup instead")
    with op.batch_alter_table("serving_state") as batch:
        batch.add_column(
            sa.Column(
                "default_policy_id",
                sa.Integer(),
                sa.ForeignKey("policies.id", ondelete="SET NULL", name="fk_serving_state_default_policy_id"),
                nullable=True,
            )
        )
    op.execute(
        sa.text(
            "UPDATE serving_state SET default_policy_id = (SELECT model_aliases.policy_id FROM model_aliases "
            "JOIN models ON models.id = model_aliases.model_id WHERE models.name = :name AND model_aliases.alias = "
            ":alias)"
        ).bindparams(name=DEFAULT_MODEL_NAME, alias=CHAMPION)
    )
    op.drop_index("ix_policies_model_id", "policies")
    for table in ("jobs", "policies"):
        op.drop_constraint(f"fk_{table}_model_id", table, type_="foreignkey")
        op.drop_column(table, "model_id")
    op.drop_table("live_returns")
    op.drop_index("uq_rollouts_active_model", "rollouts")
    op.drop_table("rollouts")
    op.drop_table("model_aliases")
    op.drop_table("models")
