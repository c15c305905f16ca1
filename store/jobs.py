"""The job queue: the jobs table, claimed atomically by workers, leased and heartbeated.

API side (the caller commits unless noted): enqueue_job (commits), get_job, list_jobs, request_cancel,
episode_history, evaluation_history, count_jobs_by_status, expire_stale_leases (commits).

Worker side (each commits, because its atomicity is the point): claim_next_job, set_episodes_total,
heartbeat, record_episode, record_evaluation, record_tracking, complete_job, fail_job, cancel_running_job,
release_job, expire_stale_leases. Every worker-side write first checks that the job is still `running` under this
worker's id and raises LeaseLostError otherwise, so a worker whose lease expired can never overwrite the outcome
(record_tracking, which annotates the job's tracker run after it succeeded, checks the worker alone).

Concurrency and the lease checks are store.leases', shared with every leased table: on PostgreSQL claiming uses
`FOR UPDATE SKIP LOCKED` and enqueueing a transaction-scoped advisory lock; on SQLite every transaction already
begins IMMEDIATE (store.db), which serialises writers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models.registry_vocabulary import DEFAULT_MODEL_NAME
from models.training_config import JOB_STATUSES, PROMOTE_RULES
from store import leases
from store.leases import ENQUEUE_LOCK_KEY, MAX_ERROR_CHARS, QueueFullError, lock_queue
from store.policies import register_policy
from store.tables.base import utcnow
from store.tables.work_queues import EpisodeRow, EvaluationRow, Job

# Public, the lease layer's names re-exported too: the API and clients import them from here.
__all__ = [
    "ENQUEUE_LOCK_KEY",
    "JOBS",
    "MAX_ERROR_CHARS",
    "JobNotFoundError",
    "JobStateError",
    "LeaseLostError",
    "QueueFullError",
    "cancel_running_job",
    "claim_next_job",
    "complete_job",
    "count_jobs_by_status",
    "discard_attempt_history",
    "enqueue_job",
    "episode_history",
    "evaluation_history",
    "expire_stale_leases",
    "fail_job",
    "get_job",
    "heartbeat",
    "list_jobs",
    "lock_queue",
    "record_episode",
    "record_evaluation",
    "record_tracking",
    "release_job",
    "request_cancel",
    "set_episodes_total",
]

# The API and clients know the lease layer's state error by this name.
JobStateError = leases.LeaseStateError


class JobNotFoundError(JobStateError, LookupError):
    """No job with that id (HTTP 404). A JobStateError too, so callers catching that one are not surprised."""


class LeaseLostError(JobStateError):
    """The worker no longer holds the job: its lease expired, or the job ended or was reclaimed elsewhere."""


JOBS = leases.LeaseKind(Job, noun="job", holder="worker", not_found=JobNotFoundError, lease_lost=LeaseLostError)


# --- API side -------------------------------------------------------------------------------------------


def enqueue_job(
    session: Session,
    *,
    config: dict[str, Any],
    promote: str,
    max_queued: int,
    max_attempts: int = 1,
    model_id: int | None = None,
) -> Job:
    """Insert a queued job unless `max_queued` jobs are already queued (QueueFullError). Commits.

    Atomic against concurrent enqueues from any number of processes: exactly `max_queued` can be queued.
    `config` is stored as given ({"preset": ..., overrides...}); an int `episodes` in it sets episodes_total.
    `max_attempts` > 1 lets a job whose worker died be requeued (its partial history is discarded) that often.
    `model_id` is the model the trained policy joins. Whatever the caller added to the session before (a model
    created for this job) is committed with the job, or rolled back with it when the queue is full.
    """
    if promote not in PROMOTE_RULES:
        raise ValueError(f"promote must be one of {', '.join(PROMOTE_RULES)}, got {promote!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    episodes = config.get("episodes")
    job = Job(
        status="queued",
        config=dict(config),
        promote=promote,
        created_at=utcnow(),
        attempts=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        episodes_total=episodes if isinstance(episodes, int) and not isinstance(episodes, bool) else None,
        episodes_done=0,
        env_steps=0,
        model_id=model_id,
    )
    return leases.enqueue(session, JOBS, job, max_queued=max_queued)


def get_job(session: Session, job_id: int) -> Job | None:
    """The job, or None."""
    return session.get(Job, job_id)


def list_jobs(
    session: Session, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Job], int]:
    """A page of jobs, newest first, optionally of one status, and the total count matching the filter."""
    return leases.list_page(session, JOBS, status=status, limit=limit, offset=offset)


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a queued job now, or ask its worker to stop a running one (it stops within one episode).

    Idempotent for a running job already asked. JobNotFoundError for an unknown id; JobStateError for a job
    that already ended. The caller commits.
    """
    job, _cancelled_now = leases.request_cancel(session, JOBS, job_id)
    return job


def episode_history(session: Session, job_id: int) -> list[EpisodeRow]:
    """Every recorded episode of the job, in order (also while it runs)."""
    return list(session.scalars(select(EpisodeRow).where(EpisodeRow.job_id == job_id).order_by(EpisodeRow.episode)))


def evaluation_history(session: Session, job_id: int) -> list[EvaluationRow]:
    """Every recorded evaluation of the job, in order."""
    return list(
        session.scalars(select(EvaluationRow).where(EvaluationRow.job_id == job_id).order_by(EvaluationRow.episode))
    )


def count_jobs_by_status(session: Session) -> dict[str, int]:
    """Number of jobs per status, every status present (zero when none)."""
    counts: dict[str, int] = dict.fromkeys(JOB_STATUSES, 0)
    for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        counts[status] = count
    return counts


def expire_stale_leases(session: Session, *, now: datetime | None = None) -> list[int]:
    """End every running job whose lease expired (its worker died or hung). Commits; returns their ids.

    The job ends `failed` with the reason, keeping the reward history written so far, unless it has attempts
    left (max_attempts > 1): then it is queued again with its history discarded, so the history always
    belongs to one attempt. Safe to call from any number of workers and API processes at once.
    """
    return leases.expire_stale(
        session, JOBS, end=lambda job, reason, when: _end_attempt(session, job, reason, when), now=now
    )


# --- worker side ----------------------------------------------------------------------------------------


def claim_next_job(session: Session, *, worker_id: str, lease_seconds: float) -> Job | None:
    """Atomically take the oldest queued job: it becomes `running` under this worker with a fresh lease.

    Commits. None when nothing is queued. Concurrent claimers never get the same job.
    """
    return leases.claim_oldest(session, JOBS, holder_id=worker_id, lease_seconds=lease_seconds, prepare=_new_attempt)


def _new_attempt(job: Job) -> None:
    job.attempts += 1
    job.error = None


def set_episodes_total(session: Session, job_id: int, *, worker_id: str, episodes_total: int) -> None:
    """Record how many episodes the resolved config will run (the preset may have supplied it). Commits."""
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        job.episodes_total = episodes_total


def record_tracking(session: Session, job_id: int, *, worker_id: str, run_id: str | None, error: str | None) -> None:
    """Record the job's experiment-tracker run id, or why it is (partly) not tracked. Commits.

    The one worker write allowed after the job ended: the tracker's last step (the registry alias of a promoted
    policy) comes after the job succeeded. Still only by the worker that ran it; nothing else of the row changes.
    """
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None:
        raise JobNotFoundError(f"job {job_id} not found")
    if job.worker_id != worker_id:
        session.rollback()
        raise LeaseLostError(f"job {job_id} is held by worker {job.worker_id}, not {worker_id}")
    job.tracking_run_id = run_id
    job.tracking_error = error[:2000] if error else None
    session.commit()


def heartbeat(session: Session, job_id: int, *, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether cancellation was requested. Commits. LeaseLostError if not ours."""
    return leases.renew(session, JOBS, job_id, holder_id=worker_id, lease_seconds=lease_seconds)


def record_episode(
    session: Session,
    job_id: int,
    *,
    worker_id: str,
    lease_seconds: float,
    episode: int,
    episode_return: float,
    avg_return_10: float,
    env_steps: int,
    wall_time: float,
) -> bool:
    """Append one episode to the history, update progress and extend the lease, in one transaction. Commits.

    Returns whether cancellation was requested, so the worker needs no separate round trip to find out.
    """
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        session.add(
            EpisodeRow(
                job_id=job_id,
                episode=episode,
                episode_return=episode_return,
                avg_return_10=avg_return_10,
                env_steps=env_steps,
                wall_time=wall_time,
            )
        )
        job.episodes_done = episode + 1
        job.env_steps = env_steps
        job.last_return = episode_return
        leases.extend_lease(job, lease_seconds)
        return job.cancel_requested


def record_evaluation(
    session: Session,
    job_id: int,
    *,
    worker_id: str,
    episode: int,
    env_steps: int,
    mean_return: float,
    std_return: float,
    wall_time: float,
) -> None:
    """Append one evaluation and keep the job's best_eval_return current. Commits."""
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        session.add(
            EvaluationRow(
                job_id=job_id,
                episode=episode,
                env_steps=env_steps,
                mean_return=mean_return,
                std_return=std_return,
                wall_time=wall_time,
            )
        )
        if job.best_eval_return is None or mean_return > job.best_eval_return:
            job.best_eval_return = mean_return


def complete_job(
    session: Session, job_id: int, *, worker_id: str, weights: bytes, default_model: str = DEFAULT_MODEL_NAME
) -> Job:
    """Register the trained actor (applying the job's promotion rule) and mark the job `succeeded`. Commits.

    One transaction: either the job succeeded with its policy stored, or neither happened. Raises
    models.weights.WeightsFormatError for invalid bytes, and store.policies.PolicyModelMismatchError for an actor
    that does not fit the job's model (nothing is stored then). The policy joins the job's model (a job queued
    before models existed has none: its policy joins `default_model`, the DEFAULT_MODEL setting, when that is for
    its environment).
    """
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        policy = register_policy(
            session,
            weights=weights,
            source_job_id=job_id,
            promote=job.promote,
            model_id=job.model_id,
            default_model=default_model,
        )
        job.policy_id = policy.id
        leases.finish(job, "succeeded")
    return job


def fail_job(session: Session, job_id: int, *, worker_id: str, error: str) -> Job:
    """Mark the job `failed` with a one-line reason (no stack traces: they belong in the log). Commits."""
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        leases.fail(job, error)
    return job


def cancel_running_job(session: Session, job_id: int, *, worker_id: str) -> Job:
    """Mark the job `cancelled` after its worker stopped on request; the history so far is kept. Commits."""
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        leases.finish(job, "cancelled")
    return job


def release_job(session: Session, job_id: int, *, worker_id: str, reason: str) -> Job:
    """Give the job up (e.g. the worker is shutting down): requeued if it has attempts left, else `failed`
    with the reason, exactly as if its lease had expired. Commits."""
    with leases.owned(session, JOBS, job_id, worker_id) as job:
        _end_attempt(session, job, reason, utcnow())
    return job


def discard_attempt_history(session: Session, job: Job) -> None:
    """Forget an ended attempt's episodes, evaluations and progress: a retry starts from scratch, so the history
    always belongs to one attempt. The caller commits."""
    session.execute(delete(EpisodeRow).where(EpisodeRow.job_id == job.id))
    session.execute(delete(EvaluationRow).where(EvaluationRow.job_id == job.id))
    job.episodes_done, job.env_steps, job.last_return, job.best_eval_return = 0, 0, None, None


# --- helpers --------------------------------------------------------------------------------------------


def _end_attempt(session: Session, job: Job, reason: str, now: datetime) -> None:
    if job.attempts < job.max_attempts and not job.cancel_requested:
        discard_attempt_history(session, job)
        job.status = "queued"
        job.error = f"attempt {job.attempts} of {job.max_attempts} ended: {reason}; requeued"
        job.worker_id = None
        job.started_at = None
        job.heartbeat_at = None
        job.lease_expires_at = None
        return
    leases.fail(job, reason, now)
