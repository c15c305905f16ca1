"""Did it land? Read-backs for a holder's writes whose outcome is unknown: the connection failed around the COMMIT, so
the transaction may have committed although the caller saw an error.

Retrying such a write blindly is wrong: a second `record_episode` hits the history's primary key, a second
`complete_job` finds the job no longer running and raises LeaseLostError. The writer (trainer.claim_loop's
`Database.retrying`) first asks here whether its attempt landed, and takes "already recorded by me" as success. Each
read-back answers None when the write did not land (then it is retried), else the write's own result, in a 1-tuple
(some writes return None themselves). Only the holder's own rows count: `worker_id` or `runner_id` names the attempt
that wrote them, so a row written by an earlier or a newer attempt never passes for this one's.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.tables.work_queues import EpisodeRow, EvaluationRow, Job, Sweep


def episode_landed(session: Session, job_id: int, *, worker_id: str, episode: int) -> tuple[bool] | None:
    """record_episode's: the episode is in the job's history under this worker; its result, whether cancellation
    was requested."""
    job = _job_of(session, job_id, worker_id)
    if job is None or session.get(EpisodeRow, (job_id, episode)) is None:
        return None
    return (job.cancel_requested,)


def evaluation_landed(session: Session, job_id: int, *, worker_id: str, episode: int) -> tuple[None] | None:
    """record_evaluation's: the evaluation after `episode` is in the job's history under this worker."""
    if _job_of(session, job_id, worker_id) is None or session.get(EvaluationRow, (job_id, episode)) is None:
        return None
    return (None,)


def job_ended_landed(session: Session, job_id: int, *, worker_id: str, status: str) -> tuple[Job] | None:
    """complete_job's (`succeeded`), fail_job's (`failed`), cancel_running_job's (`cancelled`): the job ended
    `status` under this worker."""
    job = _job_of(session, job_id, worker_id)
    return None if job is None or job.status != status else (job,)


def trial_begun(session: Session, *, worker_id: str) -> tuple[int | None] | None:
    """begin_trial's: a job runs under this trial attempt's worker id (unique to the attempt)."""
    job_id = session.scalar(select(Job.id).where(Job.worker_id == worker_id).order_by(Job.id.desc()).limit(1))
    return None if job_id is None else (job_id,)


def sweep_finished_landed(session: Session, sweep_id: int, *, runner_id: str) -> tuple[Sweep] | None:
    """finish_sweep's: the sweep ended under this runner."""
    sweep = session.get(Sweep, sweep_id, populate_existing=True)
    if sweep is None or sweep.runner_id != runner_id or sweep.status in ("queued", "running"):
        return None
    return (sweep,)


def _job_of(session: Session, job_id: int, worker_id: str) -> Job | None:
    job = session.get(Job, job_id, populate_existing=True)
    return job if job is not None and job.worker_id == worker_id else None
