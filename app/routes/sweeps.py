"""Hyperparameter sweeps: queue one (run by a sweep runner on Ray Tune), list, inspect with its trials, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.orm import Session

from app.infra.errors import found_or_404
from app.routes.deps import JSON_WRITE, ApiKeyDep, SessionDep, SettingsDep, SweepPageDep
from app.schemas.errors import cancel_responses, error_responses, queued_responses
from app.schemas.sweeps import SweepList, SweepOut, SweepRequest, SweepTrialOut
from app.services.queue import cancel as cancel_leased
from app.services.sweeps import submit_sweep
from models.training_config import JobStatus
from store.sweeps import SweepNotFoundError, get_sweep, list_sweeps, request_cancel_sweep, trials_of
from store.tables.base import utcnow
from store.tables.work_queues import Job, Sweep, SweepTrial

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

SweepId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The sweep's id.")]
StatusQuery = Annotated[JobStatus | None, Query(description="Only sweeps in this state.")]


@router.post("", response_model=SweepOut, status_code=202, dependencies=JSON_WRITE, responses=queued_responses("sweep"))
def create_sweep(body: SweepRequest, session: SessionDep, settings: SettingsDep, response: Response) -> SweepOut:
    """Queue a sweep: its space is validated against the training config and the server's budget first."""
    sweep = submit_sweep(session, settings, body)
    response.headers["Location"] = f"/sweeps/{sweep.id}"
    return SweepOut.model_validate(sweep)


@router.get("", response_model=SweepList, responses=error_responses(422, 503))
def sweeps(session: SessionDep, page: SweepPageDep, status: StatusQuery = None) -> SweepList:
    """Sweeps, newest first, each with its trials so far; paginated with the total count."""
    rows, total = list_sweeps(session, status=status, limit=page.limit, offset=page.offset)
    items = [_sweep_out(session, sweep) for sweep in rows]
    return SweepList(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/{sweep_id}", response_model=SweepOut, responses=error_responses(404, 422, 503))
def sweep(sweep_id: SweepId, session: SessionDep) -> SweepOut:
    """One sweep: status, every started trial (job, config, status, evaluations, node, wall time) and the best."""
    return _sweep_out(session, _sweep_or_404(session, sweep_id))


@router.post("/{sweep_id}/cancel", response_model=SweepOut, dependencies=[ApiKeyDep], responses=cancel_responses())
def cancel(sweep_id: SweepId, session: SessionDep) -> SweepOut:
    """Cancel a queued sweep now, or stop a running one: every trial stops within one episode (409 if ended)."""
    return _sweep_out(session, cancel_leased(session, "sweep", sweep_id, request_cancel_sweep, SweepNotFoundError))


def _sweep_or_404(session: Session, sweep_id: int) -> Sweep:
    return found_or_404(get_sweep(session, sweep_id), "sweep", sweep_id)


def _sweep_out(session: Session, row: Sweep) -> SweepOut:
    out = SweepOut.model_validate(row)
    out.trials = [_trial_out(trial, job) for trial, job in trials_of(session, row.id)]
    out.best = next((trial for trial in out.trials if trial.job_id == row.best_job_id), None)
    return out


def _trial_out(trial: SweepTrial, job: Job) -> SweepTrialOut:
    wall_time = None
    if job.started_at is not None:
        wall_time = ((job.finished_at or utcnow()) - job.started_at).total_seconds()
    return SweepTrialOut(
        job_id=job.id,
        trial_id=trial.trial_id,
        status=job.status,  # type: ignore[arg-type]  # the column's check constraint holds the vocabulary
        params=trial.params,
        config=job.config,
        episodes_done=job.episodes_done,
        episodes_total=job.episodes_total,
        best_eval_return=job.best_eval_return,
        heldout_return=trial.heldout_return,
        heldout_std=trial.heldout_std,
        node=trial.node,
        node_ip=trial.node_ip,
        attempts=job.attempts,
        started_at=job.started_at,
        finished_at=job.finished_at,
        wall_time=wall_time,
        policy_id=job.policy_id,
        error=job.error,
    )
