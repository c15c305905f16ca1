"""The schema: jobs (the queue itself), their reward histories, and the registry: models, their policies, aliases
and rollouts, the live returns measured while serving, and the registry's change counter every API process polls.

Every timestamp is timezone-aware UTC in Python. PostgreSQL stores `timestamptz`; SQLite has no time zone
type, so `UTCDateTime` stores naive UTC text there and re-attaches UTC on the way out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, synonym

from models.registry_vocabulary import LEARNER_PUBLISH_MODES, ROLLOUT_MODES, ROLLOUT_STATUSES
from models.sweep_space import EARLY_STOP_RULES, SEARCH_KINDS
from models.training_config import JOB_STATUSES, PROMOTE_RULES

SERVING_STATE_ID = 1


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime that is always timezone-aware UTC in Python, whatever the database stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use an aware datetime")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them all naive in UTC so the ordering is right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL (compact, indexable); plain JSON text elsewhere.
JSONDict = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONDict, float: Float(precision=53)}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Job(Base):
    """A training job; the jobs table is also the queue (claimed by workers, leased, heartbeated)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_jobs_status"),
        CheckConstraint(_in("promote", PROMOTE_RULES), name="ck_jobs_promote"),
        # Claiming scans queued jobs oldest first; lease expiry scans running jobs.
        Index("ix_jobs_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    config: Mapped[dict[str, Any]]
    promote: Mapped[str] = mapped_column(String(16), default="if_better")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=1)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    # use_alter: jobs and policies reference each other, so this constraint is added after both tables exist.
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("policies.id", ondelete="SET NULL", use_alter=True, name="fk_jobs_policy_id")
    )
    episodes_total: Mapped[int | None]
    episodes_done: Mapped[int] = mapped_column(default=0)
    env_steps: Mapped[int] = mapped_column(default=0)
    last_return: Mapped[float | None]
    best_eval_return: Mapped[float | None]
    # The experiment tracker's run of this job (MLflow), or why the job was not tracked (server down...).
    tracking_run_id: Mapped[str | None] = mapped_column(String(64))
    tracking_error: Mapped[str | None] = mapped_column(Text)
    # The model the trained policy joins (created on first use by POST /train); None for jobs queued before models
    # existed, whose policy joins the model of its environment.
    # No ON DELETE action here or on policies.model_id: models are never deleted.
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    # The lease holder under the name every leased table shares (store.leases); no column of its own.
    holder_id: Mapped[str | None] = synonym("worker_id")


class EpisodeRow(Base):
    """One training episode's return, written as it happens."""

    __tablename__ = "episodes"

    # The composite primary key is the unique (job_id, episode) index the history is read by.
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    episode: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    episode_return: Mapped[float]
    avg_return_10: Mapped[float]
    env_steps: Mapped[int]
    wall_time: Mapped[float]


class EvaluationRow(Base):
    """One evaluation (noise-free episodes) run after `episode`."""

    __tablename__ = "evaluations"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    episode: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    env_steps: Mapped[int]
    mean_return: Mapped[float]
    std_return: Mapped[float]
    wall_time: Mapped[float]


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
        CheckConstraint(_in("mode", ROLLOUT_MODES), name="ck_rollouts_mode"),
        CheckConstraint(_in("status", ROLLOUT_STATUSES), name="ck_rollouts_status"),
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


class LiveReturn(Base):
    """Finished live episodes of one policy, summed over every API process: count, sum and sum of squares of the
    returns, enough for a mean and its confidence interval. Written in batches by the API (store.live_returns).

    `rollout_id` is the trial the episodes ran under, or 0 for episodes outside any trial (not a foreign key for
    that reason; the rows of a deleted model's rollouts go with their policies).
    """

    __tablename__ = "live_returns"

    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    episodes: Mapped[int] = mapped_column(default=0)
    return_sum: Mapped[float] = mapped_column(default=0.0)
    return_sq_sum: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LiveReturnBucket(Base):
    """The same episodes as `LiveReturn`, counted and summed per bucket of a fixed logarithmic scale of the return
    (store.return_buckets): what the guard's trimmed mean reads, so one extreme episode cannot move it far."""

    __tablename__ = "live_return_buckets"

    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    episodes: Mapped[int] = mapped_column(default=0)
    return_sum: Mapped[float] = mapped_column(default=0.0)


class LiveReturnFlush(Base):
    """The id of every live-return batch written in the last hour, inserted in the batch's own transaction: a batch
    retried after its COMMIT's reply was lost finds its id and adds nothing (store.live_returns.flush)."""

    __tablename__ = "live_return_flushes"
    __table_args__ = (Index("ix_live_return_flushes_created_at", "created_at"),)

    flush_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExperienceChunk(Base):
    """A block of recorded transitions of one model (models.experience_chunks: Arrow IPC, zstd), written by an API
    process in one transaction per flush. The bytes are in `data`, or in external storage under `storage_key`.

    `flush_id` is unique: a flush retried after its COMMIT's reply was lost finds its chunk and adds nothing.
    Times are unix seconds of the first and last transition; `policy_counts` maps policy id (as text, -1 for none)
    to its transitions in the chunk; `returns` sums the episodes that ended in it by arm (`explore`, `policy`):
    {arm: [episodes, return_sum, return_sq_sum]}, so explore and non-explore live returns read side by side.
    """

    __tablename__ = "experience_chunks"
    __table_args__ = (Index("ix_experience_chunks_model_id_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    flush_id: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_time: Mapped[float]
    last_time: Mapped[float]
    transitions: Mapped[int]
    episodes: Mapped[int]
    size_bytes: Mapped[int]  # the chunk's encoded size
    policy_counts: Mapped[dict[str, Any]]
    returns: Mapped[dict[str, Any]]
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # loaded only when asked for
    storage_key: Mapped[str | None] = mapped_column(String(500))


class Sweep(Base):
    """A hyperparameter sweep; the sweeps table is also the sweep runners' queue (claimed, leased, heartbeated).

    Its trials are jobs (sweep_trials links them), run by Ray Tune from the runner that holds the sweep.
    """

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_sweeps_status"),
        CheckConstraint(_in("promote", PROMOTE_RULES), name="ck_sweeps_promote"),
        CheckConstraint(_in("search", SEARCH_KINDS), name="ck_sweeps_search"),
        CheckConstraint(f"early_stop IS NULL OR {_in('early_stop', EARLY_STOP_RULES)}", name="ck_sweeps_early_stop"),
        Index("ix_sweeps_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    model: Mapped[str] = mapped_column(String(200))
    base: Mapped[dict[str, Any]]  # {"preset": ..., overrides...}, as a job's config
    space: Mapped[dict[str, Any]]  # {field: {"loguniform": [low, high]} | {"choice": [...]} | ...}
    trials: Mapped[int]
    max_concurrent: Mapped[int]
    search: Mapped[str] = mapped_column(String(16))
    early_stop: Mapped[str | None] = mapped_column(String(16))
    promote: Mapped[str] = mapped_column(String(16), default="if_better")
    # Tune's own retry setting: how often a trial whose process or node died is started again.
    max_failures: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    runner_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    best_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    # The lease holder under the name every leased table shares (store.leases); no column of its own.
    holder_id: Mapped[str | None] = synonym("runner_id")


class SweepTrial(Base):
    """One trial of a sweep: its job (history, status, policy) and what only a trial has (Ray node, held-out score)."""

    __tablename__ = "sweep_trials"
    __table_args__ = (Index("ux_sweep_trials_sweep_trial", "sweep_id", "trial_id", unique=True),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    trial_id: Mapped[str] = mapped_column(String(64))  # Ray Tune's
    params: Mapped[dict[str, Any]]  # the sampled hyperparameters (the job's config holds base + these)
    node: Mapped[str | None] = mapped_column(String(64))  # the Ray node id of the latest attempt
    node_ip: Mapped[str | None] = mapped_column(String(64))
    # The objective: the exported actor's mean return on seeds neither training nor its evaluations used.
    heldout_return: Mapped[float | None]
    heldout_std: Mapped[float | None]


class Learner(Base):
    """An online learner of one model (trainer.online): DDPG trained from the model's recorded experience, publishing
    a policy every `publish_every` updates. Also the learners' queue: claimed by a `python -m trainer learner`
    process, leased and heartbeated (store.leases). A learner whose process dies is queued again (not failed) and
    taken over from its checkpoint; it ends only when stopped (`cancelled`) or when it cannot run (`failed`).

    At most one learner per model is queued or running (a partial unique index says so).
    """

    __tablename__ = "learners"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_learners_status"),
        CheckConstraint(_in("publish", LEARNER_PUBLISH_MODES), name="ck_learners_publish"),
        Index("ix_learners_status_created_at", "status", "created_at"),
        Index(
            "uq_learners_live_model",
            "model_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    config: Mapped[dict[str, Any]]  # {"preset": ..., overrides...}, as a job's
    publish_every: Mapped[int]
    publish: Mapped[str] = mapped_column(String(16))  # "champion" | "canary"
    canary: Mapped[dict[str, Any] | None]  # percent, min_episodes, max_regression, min_improvement (canary mode)
    exploration: Mapped[dict[str, Any] | None]  # what the model explores with while the learner runs
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)  # claims so far: 1 + takeovers
    # Progress, written by the holder about once a second and with every publish.
    transitions_consumed: Mapped[int] = mapped_column(default=0)
    updates: Mapped[int] = mapped_column(default=0)
    cursor: Mapped[int] = mapped_column(default=0)  # the newest experience chunk id consumed
    pending: Mapped[int] = mapped_column(default=0)  # recorded transitions newer than the cursor
    publishes: Mapped[int] = mapped_column(default=0)
    progress_at: Mapped[datetime | None]
    last_publish_at: Mapped[datetime | None]
    last_policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    # trainer.online.checkpoint bytes, written with every publish: what a takeover resumes from.
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

    holder_id: Mapped[str | None] = synonym("worker_id")


class LearnerPublication(Base):
    """A policy a learner published, with the learner's counters at that moment."""

    __tablename__ = "learner_publications"

    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id", ondelete="CASCADE"), index=True)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    updates: Mapped[int]
    transitions_consumed: Mapped[int]
    # How it entered the registry: "champion", "challenger" (a canary started) or "champion_first" (a canary
    # learner's first policy, with no champion to compare against).
    role: Mapped[str] = mapped_column(String(16))
