"""The work queues: training jobs with their reward histories, sweeps and their trials, and online learners with
the policies they published. Each of jobs, sweeps and learners is also its own queue (claimed, leased and
heartbeated through store.leases).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, synonym

from models.registry_vocabulary import LEARNER_PUBLISH_MODES
from models.sweep_space import EARLY_STOP_RULES, SEARCH_KINDS
from models.training_config import JOB_STATUSES, PROMOTE_RULES
from store.tables.base import Base, sql_in, utcnow


class Job(Base):
    """A training job; the jobs table is also the queue (claimed by workers, leased, heartbeated)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(sql_in("status", JOB_STATUSES), name="ck_jobs_status"),
        CheckConstraint(sql_in("promote", PROMOTE_RULES), name="ck_jobs_promote"),
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


class Sweep(Base):
    """A hyperparameter sweep; the sweeps table is also the sweep runners' queue (claimed, leased, heartbeated).

    Its trials are jobs (sweep_trials links them), run by Ray Tune from the runner that holds the sweep.
    """

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(sql_in("status", JOB_STATUSES), name="ck_sweeps_status"),
        CheckConstraint(sql_in("promote", PROMOTE_RULES), name="ck_sweeps_promote"),
        CheckConstraint(sql_in("search", SEARCH_KINDS), name="ck_sweeps_search"),
        CheckConstraint(f"early_stop IS NULL OR {sql_in('early_stop', EARLY_STOP_RULES)}", name="ck_sweeps_early_stop"),
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
        CheckConstraint(sql_in("status", JOB_STATUSES), name="ck_learners_status"),
        CheckConstraint(sql_in("publish", LEARNER_PUBLISH_MODES), name="ck_learners_publish"),
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
