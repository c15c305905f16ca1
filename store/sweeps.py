"""Sweeps: the sweeps table is the sweep runners' queue, and each trial of a sweep is a job.

The queue contract is store.jobs' own, for sweeps: a runner claims the oldest queued sweep (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, an immediate transaction on SQLite), holds it under a lease it renews, and every write of
the runner first checks that it still holds the sweep (SweepLeaseLostError otherwise), so two runners never run
the same sweep and a runner whose lease expired can never overwrite the outcome.

Trials (Ray Tune runs them anywhere on the cluster) are jobs created `running` by the trial itself
(`begin_trial`): never `queued`, so the plain job worker, which claims only queued jobs, never sees them. They
write episodes and evaluations through store.jobs under their own worker id, and their leases expire like any
job's. A retried trial (Tune restarts it after its process or node died) takes its job over again, history
discarded, so the history always belongs to one attempt.

API side (the caller commits unless noted): enqueue_sweep (commits), get_sweep, list_sweeps, trials_of,
request_cancel_sweep, expire_stale_sweep_leases (commits). Runner side (each commits): claim_next_sweep,
heartbeat_sweep, end_trial, note_trial_retry, finish_sweep. The trial side is store.sweep_trials.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from models.training_config import JOB_STATUSES, PROMOTE_RULES, TERMINAL_STATUSES
from store.jobs import MAX_ERROR_CHARS, JobStateError, QueueFullError, lock_queue
from store.sweep_promotion import promote_by_rule
from store.tables import Job, Sweep, SweepTrial, utcnow


class SweepNotFoundError(JobStateError, LookupError):
    """No sweep with that id (HTTP 404)."""


class SweepLeaseLostError(JobStateError):
    """The runner no longer holds the sweep: its lease expired, or the sweep ended or was claimed elsewhere."""


# --- API side -------------------------------------------------------------------------------------------


def enqueue_sweep(
    session: Session,
    *,
    model: str,
    base: dict[str, Any],
    space: dict[str, Any],
    trials: int,
    max_concurrent: int,
    search: str,
    early_stop: str | None,
    promote: str,
    max_failures: int,
    max_queued: int,
) -> Sweep:
    """Insert a queued sweep unless `max_queued` sweeps are already queued (QueueFullError). Commits."""
    if promote not in PROMOTE_RULES:
        raise ValueError(f"promote must be one of {', '.join(PROMOTE_RULES)}, got {promote!r}")
    try:
        lock_queue(session)  # the jobs' enqueue lock: "count, then insert" stays atomic across API replicas
        queued = session.scalar(select(func.count()).select_from(Sweep).where(Sweep.status == "queued")) or 0
        if queued >= max_queued:
            raise QueueFullError(f"{queued} sweeps are already queued (the limit is {max_queued}); try again later")
        sweep = Sweep(
            status="queued",
            model=model,
            base=dict(base),
            space=dict(space),
            trials=trials,
            max_concurrent=max_concurrent,
            search=search,
            early_stop=early_stop,
            promote=promote,
            max_failures=max_failures,
            created_at=utcnow(),
            cancel_requested=False,
        )
        session.add(sweep)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return sweep


def get_sweep(session: Session, sweep_id: int) -> Sweep | None:
    return session.get(Sweep, sweep_id)


def list_sweeps(
    session: Session, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Sweep], int]:
    """A page of sweeps, newest first, optionally of one status, and the total count matching the filter."""
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
    query = select(Sweep)
    count = select(func.count()).select_from(Sweep)
    if status is not None:
        query = query.where(Sweep.status == status)
        count = count.where(Sweep.status == status)
    total = session.scalar(count) or 0
    page = session.scalars(query.order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit).offset(offset))
    return list(page), total


def trials_of(session: Session, sweep_id: int) -> list[tuple[SweepTrial, Job]]:
    """Every trial of the sweep that has started, with its job, in the order they started."""
    rows = session.execute(
        select(SweepTrial, Job).join(Job, Job.id == SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id)
    )
    return sorted(((trial, job) for trial, job in rows), key=lambda pair: pair[1].id)


def request_cancel_sweep(session: Session, sweep_id: int) -> Sweep:
    """Cancel a queued sweep now, or ask a running one to stop: its runner stops Tune and every running trial
    stops within one episode (each trial job is asked to cancel too). The caller commits.

    SweepNotFoundError for an unknown id; JobStateError for a sweep that already ended.
    """
    now = utcnow()
    cancelled_now = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == "queued")
        .values(status="cancelled", finished_at=now, cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(cancelled_now) == 0:
        session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Job)
            .where(
                Job.status == "running", Job.id.in_(select(SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id))
            )
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    sweep = session.get(Sweep, sweep_id, populate_existing=True)
    if sweep is None:
        raise SweepNotFoundError(f"sweep {sweep_id} not found")
    if sweep.status in TERMINAL_STATUSES and _rowcount(cancelled_now) == 0:
        raise JobStateError(f"sweep {sweep_id} is already {sweep.status}")
    return sweep


def expire_stale_sweep_leases(session: Session, *, now: datetime | None = None) -> list[int]:
    """Fail every running sweep whose runner stopped renewing its lease. Commits; returns their ids.

    Its trials end by themselves: Ray ends a dead driver's trials, and their jobs' leases expire (store.jobs).
    """
    now = now or utcnow()
    try:
        expired = list(
            session.scalars(
                select(Sweep)
                .where(Sweep.status == "running", Sweep.lease_expires_at < now)
                .order_by(Sweep.id)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for sweep in expired:
            expires = sweep.lease_expires_at.isoformat() if sweep.lease_expires_at else "unknown"
            sweep.status = "failed"
            sweep.error = f"sweep runner {sweep.runner_id} stopped heartbeating (lease expired at {expires})"
            sweep.finished_at = now
            sweep.lease_expires_at = None
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return [sweep.id for sweep in expired]


# --- runner side ----------------------------------------------------------------------------------------


def claim_next_sweep(session: Session, *, runner_id: str, lease_seconds: float) -> Sweep | None:
    """Atomically take the oldest queued sweep: `running` under this runner with a fresh lease. Commits."""
    now = utcnow()
    try:
        sweep = session.scalars(
            select(Sweep)
            .where(Sweep.status == "queued")
            .order_by(Sweep.created_at, Sweep.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).first()
        if sweep is None:
            session.rollback()
            return None
        sweep.status = "running"
        sweep.runner_id = runner_id
        sweep.started_at = now
        sweep.heartbeat_at = now
        sweep.lease_expires_at = now + timedelta(seconds=lease_seconds)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return sweep


def heartbeat_sweep(session: Session, sweep_id: int, *, runner_id: str, lease_seconds: float) -> bool:
    """Extend the runner's lease; returns whether cancellation was requested. Commits."""
    try:
        sweep = _owned_sweep(session, sweep_id, runner_id)
        now = utcnow()
        sweep.heartbeat_at = now
        sweep.lease_expires_at = now + timedelta(seconds=lease_seconds)
        cancel = sweep.cancel_requested
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return cancel


def end_trial(session: Session, sweep_id: int, trial_id: str, *, runner_id: str, status: str, reason: str) -> bool:
    """End a trial's job that is still `running` because Tune ended the trial (early stopping, cancellation, or
    retries used up): `status` with `reason`. Returns whether it was still running. Commits."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(sorted(TERMINAL_STATUSES))}, got {status!r}")
    try:
        _owned_sweep(session, sweep_id, runner_id)
        job = _trial_job(session, sweep_id, trial_id)
        ended = job is not None and job.status == "running"
        if job is not None and ended:
            job.status = status
            job.error = reason[:MAX_ERROR_CHARS]
            job.finished_at = utcnow()
            job.lease_expires_at = None
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return ended


def note_trial_retry(session: Session, sweep_id: int, trial_id: str, *, runner_id: str, reason: str) -> None:
    """Say on the trial's job why its attempt ended and that Tune starts it again. Commits."""
    try:
        _owned_sweep(session, sweep_id, runner_id)
        job = _trial_job(session, sweep_id, trial_id)
        if job is not None:
            job.error = f"attempt {job.attempts} ended: {reason}; retrying"[:MAX_ERROR_CHARS]
        session.commit()
    except BaseException:
        session.rollback()
        raise


def finish_sweep(session: Session, sweep_id: int, *, runner_id: str, status: str, error: str | None = None) -> Sweep:
    """End the sweep: trials still running end too, the best trial (highest held-out return among those that
    succeeded) is recorded, and when the sweep succeeded its policy is promoted by the sweep's rule. Commits.

    A sweep asked to finish `succeeded` without any successful trial ends `failed`.
    """
    try:
        sweep = _owned_sweep(session, sweep_id, runner_id)
        now = utcnow()
        session.execute(
            update(Job)
            .where(
                Job.status == "running", Job.id.in_(select(SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id))
            )
            .values(status="cancelled", finished_at=now, lease_expires_at=None, error=f"the sweep ended {status}")
            .execution_options(synchronize_session=False)
        )
        best = session.execute(
            select(SweepTrial, Job)
            .join(Job, Job.id == SweepTrial.job_id)
            .where(
                SweepTrial.sweep_id == sweep_id,
                Job.status == "succeeded",
                Job.policy_id.is_not(None),
                SweepTrial.heldout_return.is_not(None),
            )
            .order_by(SweepTrial.heldout_return.desc(), Job.id)
            .limit(1)
        ).first()
        if best is not None:
            sweep.best_job_id = best[1].id
            sweep.policy_id = best[1].policy_id
        if status == "succeeded" and best is None:
            status, error = "failed", error or "no trial succeeded"
        if status == "succeeded" and sweep.policy_id is not None:
            promote_by_rule(session, sweep.policy_id, sweep.promote)
        sweep.status = status
        sweep.error = error[:MAX_ERROR_CHARS] if error else None
        sweep.finished_at = now
        sweep.lease_expires_at = None
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return sweep


# --- helpers --------------------------------------------------------------------------------------------


def _owned_sweep(session: Session, sweep_id: int, runner_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id, with_for_update=True, populate_existing=True)
    if sweep is None:
        raise SweepNotFoundError(f"sweep {sweep_id} not found")
    if sweep.status != "running" or sweep.runner_id != runner_id:
        raise SweepLeaseLostError(
            f"sweep {sweep_id} is {sweep.status} under runner {sweep.runner_id}, no longer held by runner {runner_id}"
        )
    return sweep


def _trial_job(session: Session, sweep_id: int, trial_id: str) -> Job | None:
    job_id = session.scalar(
        select(SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id, SweepTrial.trial_id == trial_id)
    )
    return None if job_id is None else session.get(Job, job_id, with_for_update=True, populate_existing=True)


def _trial_job_ids(sweep_id: int) -> Select[int]:
    return select(SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))
