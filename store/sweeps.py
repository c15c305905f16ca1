"""Sweeps: the sweeps table is the sweep runners' queue, and each trial of a sweep is a job.

The queue contract is store.leases', as for jobs: a runner claims the oldest queued sweep (`FOR UPDATE SKIP
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

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from models.training_config import PROMOTE_RULES, TERMINAL_STATUSES
from store import leases
from store.jobs import JobStateError
from store.sweep_promotion import promote_by_rule
from store.tables.base import utcnow
from store.tables.work_queues import Job, Sweep, SweepTrial


class SweepNotFoundError(JobStateError, LookupError):
    """No sweep with that id (HTTP 404)."""


class SweepLeaseLostError(JobStateError):
    """The runner no longer holds the sweep: its lease expired, or the sweep ended or was claimed elsewhere."""


SWEEPS = leases.LeaseKind(
    Sweep, noun="sweep", holder="sweep runner", not_found=SweepNotFoundError, lease_lost=SweepLeaseLostError
)


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
    return leases.enqueue(session, SWEEPS, sweep, max_queued=max_queued)


def list_sweeps(
    session: Session, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Sweep], int]:
    """A page of sweeps, newest first, optionally of one status, and the total count matching the filter."""
    return leases.list_page(session, SWEEPS, status=status, limit=limit, offset=offset)


def get_sweep(session: Session, sweep_id: int) -> Sweep | None:
    return session.get(Sweep, sweep_id)


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
    sweep, cancelled_now = leases.request_cancel(session, SWEEPS, sweep_id)
    if not cancelled_now:
        session.execute(
            update(Job)
            .where(Job.status == "running", Job.id.in_(_trial_job_ids(sweep_id)))
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    return sweep


def expire_stale_sweep_leases(session: Session, *, now: datetime | None = None) -> list[int]:
    """Fail every running sweep whose runner stopped renewing its lease. Commits; returns their ids.

    Its trials end by themselves: Ray ends a dead driver's trials, and their jobs' leases expire (store.jobs).
    """
    return leases.expire_stale(session, SWEEPS, now=now)


# --- runner side ----------------------------------------------------------------------------------------


def claim_next_sweep(session: Session, *, runner_id: str, lease_seconds: float) -> Sweep | None:
    """Atomically take the oldest queued sweep: `running` under this runner with a fresh lease. Commits."""
    return leases.claim_oldest(session, SWEEPS, holder_id=runner_id, lease_seconds=lease_seconds)


def heartbeat_sweep(session: Session, sweep_id: int, *, runner_id: str, lease_seconds: float) -> bool:
    """Extend the runner's lease; returns whether cancellation was requested. Commits."""
    return leases.renew(session, SWEEPS, sweep_id, holder_id=runner_id, lease_seconds=lease_seconds)


def end_trial(session: Session, sweep_id: int, trial_id: str, *, runner_id: str, status: str, reason: str) -> bool:
    """End a trial's job that is still `running` because Tune ended the trial (early stopping, cancellation, or
    retries used up): `status` with `reason`. Returns whether it was still running. Commits."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(sorted(TERMINAL_STATUSES))}, got {status!r}")
    with leases.owned(session, SWEEPS, sweep_id, runner_id):
        job = _trial_job(session, sweep_id, trial_id)
        ended = job is not None and job.status == "running"
        if job is not None and ended:
            job.error = leases.trimmed(reason)
            leases.finish(job, status)
    return ended


def note_trial_retry(session: Session, sweep_id: int, trial_id: str, *, runner_id: str, reason: str) -> None:
    """Say on the trial's job why its attempt ended and that Tune starts it again. Commits."""
    with leases.owned(session, SWEEPS, sweep_id, runner_id):
        job = _trial_job(session, sweep_id, trial_id)
        if job is not None:
            job.error = leases.trimmed(f"attempt {job.attempts} ended: {reason}; retrying")


def finish_sweep(session: Session, sweep_id: int, *, runner_id: str, status: str, error: str | None = None) -> Sweep:
    """End the sweep: trials still running end too, the best trial (highest held-out return among those that
    succeeded) is recorded, and when the sweep succeeded its policy is promoted by the sweep's rule. Commits.

    A sweep asked to finish `succeeded` without any successful trial ends `failed`.
    """
    with leases.owned(session, SWEEPS, sweep_id, runner_id) as sweep:
        now = utcnow()
        session.execute(
            update(Job)
            .where(Job.status == "running", Job.id.in_(_trial_job_ids(sweep_id)))
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
        sweep.error = leases.trimmed(error) if error else None
        leases.finish(sweep, status, now=now)
    return sweep


# --- helpers --------------------------------------------------------------------------------------------


def _trial_job(session: Session, sweep_id: int, trial_id: str) -> Job | None:
    job_id = session.scalar(
        select(SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id, SweepTrial.trial_id == trial_id)
    )
    return None if job_id is None else session.get(Job, job_id, with_for_update=True, populate_existing=True)


def _trial_job_ids(sweep_id: int) -> Select[int]:
    """The subquery of the sweep's trial job ids."""
    return select(SweepTrial.job_id).where(SweepTrial.sweep_id == sweep_id)
