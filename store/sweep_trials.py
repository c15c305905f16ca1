"""The trial side of a sweep: a Ray Tune trial starts (or restarts) its job and records its objective.

A trial's job is created `running` under the trial's own worker id (never `queued`, so the plain job worker never
claims it); episodes and evaluations then go through store.jobs like any job's, with its ownership checks. A trial
that Tune retries takes its job over again with a new worker id, so a stale attempt's writes fail LeaseLostError.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store import leases
from store.jobs import JOBS, discard_attempt_history
from store.tables.base import utcnow
from store.tables.work_queues import Job, Sweep, SweepTrial


def begin_trial(
    session: Session,
    *,
    sweep_id: int,
    trial_id: str,
    params: dict[str, Any],
    config: dict[str, Any],
    worker_id: str,
    node: str | None,
    node_ip: str | None,
    lease_seconds: float,
    model_id: int | None = None,
) -> int | None:
    """Start (or, for a retried trial, restart) the trial's job, `running` under `worker_id`. Commits.

    Returns the job id, or None when the sweep is no longer running or is being cancelled: the trial must not run.
    """
    now = utcnow()
    try:
        sweep = session.get(Sweep, sweep_id, with_for_update=True, populate_existing=True)
        if sweep is None or sweep.status != "running" or sweep.cancel_requested:
            session.rollback()
            return None
        trial = session.scalars(
            select(SweepTrial).where(SweepTrial.sweep_id == sweep_id, SweepTrial.trial_id == trial_id)
        ).first()
        if trial is None:
            episodes = config.get("episodes")
            job = Job(
                status="running",
                config=dict(config),
                promote="never",  # the sweep promotes its best trial's policy, never a trial by itself
                created_at=now,
                attempts=0,
                max_attempts=1,  # Tune retries trials; the job queue must never requeue one
                cancel_requested=False,
                episodes_total=episodes if isinstance(episodes, int) else None,
                episodes_done=0,
                env_steps=0,
            )
            if model_id is not None:
                job.model_id = model_id
            session.add(job)
            session.flush()
            trial = SweepTrial(job_id=job.id, sweep_id=sweep_id, trial_id=trial_id, params=dict(params))
            session.add(trial)
        else:
            found = session.get(Job, trial.job_id, with_for_update=True, populate_existing=True)
            if found is None:
                session.rollback()
                return None
            job = found
            discard_attempt_history(session, job)
            job.finished_at = None
            trial.heldout_return = trial.heldout_std = None
        job.status = "running"
        job.worker_id = worker_id
        job.attempts += 1
        job.started_at = now
        leases.extend_lease(job, lease_seconds, now=now)
        trial.node, trial.node_ip = node, node_ip
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return job.id


def record_heldout(session: Session, job_id: int, *, worker_id: str, mean_return: float, std_return: float) -> None:
    """Record the trial's objective, checking (like every worker write) that this attempt still holds the job."""
    with leases.owned(session, JOBS, job_id, worker_id):
        trial = session.get(SweepTrial, job_id)
        if trial is not None:
            trial.heldout_return, trial.heldout_std = mean_return, std_return
