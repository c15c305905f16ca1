"""The registry: models, their policies (versions) and aliases, rollouts (a challenger on trial against the
champion), and the change counter every API process polls.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.registry_vocabulary import ROLLOUT_MODES, ROLLOUT_STATUSES
from store.tables.base import Base, sql_in, utcnow

SERVING_STATE_ID = 1


class Policy(Base):
    """A stored actor: the policy file's safetensors bytes themselves, and their metadata."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    weights: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # loaded only when asked for
    meta: Mapped[dict[str, Any]]
    env_id: Mapped[str] = mapped_column(String(200))
    obs_dim: Mapped[int]
    act_dim: Mapped[int]
    eval_mean_return: Mapped[float | None]
    source_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # A policy is a version of exactly one model, whose environment it was trained on.
    # Nullable only in the schema: SQLite cannot add a NOT NULL foreign key column without rebuilding the table, and
    # rebuilding `policies` would fire the ON DELETE actions of every table that references it. Every write sets it.
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), index=True)


class ServingState(Base):
    """The registry's change counter: one row whose `version` bumps on every change an API process must notice
    (a model created, an alias moved, a rollout started or ended), so each process polls one primary-key read."""

    __tablename__ = "serving_state"
    __table_args__ = (CheckConstraint(f"id = {SERVING_STATE_ID}", name="ck_serving_state_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=SERVING_STATE_ID)
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A named model: one environment, its policies (versions) and aliases (`champion` is what /act serves)."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # None for a model whose environment lives with its clients (created from its spaces alone): it serves and
    # records, but cannot be trained here.
    env_id: Mapped[str | None] = mapped_column(String(200))
    # models.env_spaces.EnvSpaces.to_dict(): obs_dim, act_dim and the bounds (None where infinite).
    spaces: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # models.experience_settings.ExperienceSettings.to_dict() (record, max_transitions, explore); None: never set.
    experience: Mapped[dict[str, Any] | None]
    # Transitions the API processes could not record (memory bound, a session gone mid-step), summed per flush.
    experience_dropped: Mapped[int] = mapped_column(default=0)


class ModelAlias(Base):
    """A name for one of a model's policies (`champion`, or any free alias)."""

    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Rollout(Base):
    """A trial of a challenger against a model's champion (shadow or canary); at most one is active per model.

    Ended trials stay as the record of what happened: `status`, `ended_at` and `end_reason` (the guard's figures when
    it rolled back). `salt` keys the canary's session hash, so every API process splits sessions alike.
    """

    __tablename__ = "rollouts"
    __table_args__ = (
        CheckConstraint(sql_in("mode", ROLLOUT_MODES), name="ck_rollouts_mode"),
        CheckConstraint(sql_in("status", ROLLOUT_STATUSES), name="ck_rollouts_status"),
        CheckConstraint("percent >= 0 AND percent <= 100", name="ck_rollouts_percent"),
        # One active rollout per model, enforced by the database even against concurrent PUTs.
        Index(
            "uq_rollouts_active_model",
            "model_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    champion_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    challenger_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    percent: Mapped[float]
    # No guard when min_episodes is None.
    min_episodes: Mapped[int | None]
    max_regression: Mapped[float | None]
    # Promotion on live evidence: the challenger becomes champion once its live return beats the champion's by this
    # much with min_episodes finished on each side (store.live_returns); None: never promoted automatically.
    min_improvement: Mapped[float | None]
    salt: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(Text)
    # Shadow figures summed over every API process (added in batches): samples compared, the sum of each sample's
    # mean |champion - challenger| over action dimensions, and the sum of the shadow's latencies in seconds.
    shadow_samples: Mapped[int] = mapped_column(default=0)
    shadow_divergence_sum: Mapped[float] = mapped_column(default=0.0)
    shadow_latency_sum: Mapped[float] = mapped_column(default=0.0)
