"""Hyperparameter sweeps: queue one (run by a sweep runner on Ray Tune), list, inspect with its trials, cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.infra.errors import ApiError, field_error
from app.jobs.budget import check_training_budget
from app.routes.deps import ApiKeyDep, SessionDep, SettingsDep, require_json_content_type
from app.schemas.errors import error_responses
from app.schemas.sweeps import SweepList, SweepOut, SweepRequest, SweepTrialOut
from app.schemas.train import TrainRequest
from app.settings import Settings
from models.sweep_space import SpaceError, check_space, grid_size
from models.training_config import JobStatus, TrainingConfig
from store.jobs import JobStateError, QueueFullError
from store.sweeps import (
    SweepNotFoundError,
    enqueue_sweep,
    get_sweep,
    list_sweeps,
    request_cancel_sweep,
    trials_of,
)
from store.tables import Job, Sweep, SweepTrial, utcnow

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

SweepId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The sweep's id.")]
QUEUE_FULL_RETRY_AFTER_SECONDS = 60


def validate_sweep(body: SweepRequest, settings: Settings) -> None:
    """The sweep as the runner would run it: base and every dimension checked by the one config model, then the
    server's budget on every configuration a trial could get (422 naming the field: `space.hidden_size.choice[2]`)."""
    base = body.base.overrides()
    try:
        base_config = body.base.resolved_config()
    except ValidationError as exc:  # the base alone breaks a cross-field rule
        errors = [{**error, "loc": ("body", "base", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None
    base_request = TrainRequest.model_validate({"preset": body.base.preset, **base})
    _check_budget(base_config, base_request, settings, lambda field: f"base.{field}")
    try:
        points = check_space(body.base.preset, base, body.space, search=body.search)
    except SpaceError as exc:
        raise field_error(exc.field, exc.message) from None
    for point in points:
        request = TrainRequest.model_validate({"preset": body.base.preset, **base, point.name: point.value})
        _check_budget(point.config, request, settings, _space_field(point.name, point.field))
    if body.trials > settings.sweep_max_trials:
        raise field_error("trials", f"must be at most {settings.sweep_max_trials} on this server, got {body.trials}")
    if body.search == "grid" and body.trials != grid_size(body.space):
        raise field_error("trials", f"a grid search runs its {grid_size(body.space)} combinations: set trials to that")


@router.post(
    "",
    response_model=SweepOut,
    status_code=202,
    dependencies=[ApiKeyDep, Depends(require_json_content_type)],
    responses={
        202: {
            "description": "Queued; `Location` is the sweep's URL.",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    },
)
def create_sweep(body: SweepRequest, session: SessionDep, settings: SettingsDep, response: Response) -> SweepOut:
    """Queue a sweep: its space is validated against the training config and the server's budget first."""
    validate_sweep(body, settings)
    try:
        sweep = enqueue_sweep(
            session,
            model=body.model,
            base={"preset": body.base.preset, **body.base.overrides()},
            space={name: dimension.model_dump(exclude_none=True) for name, dimension in body.space.items()},
            trials=body.trials,
            max_concurrent=body.max_concurrent,
            search=body.search,
            early_stop=body.early_stop,
            promote=body.promote,
            max_failures=body.max_failures,
            max_queued=settings.max_queued_jobs,
        )
    except QueueFullError as exc:
        raise ApiError(
            429, "queue_full", str(exc), headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)}
        ) from None
    response.headers["Location"] = f"/sweeps/{sweep.id}"
    return SweepOut.model_validate(sweep)


@router.get("", response_model=SweepList, responses=error_responses(422, 503))
def sweeps(
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="Only sweeps in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> SweepList:
    """Sweeps, newest first, each with its trials so far; paginated with the total count."""
    page, total = list_sweeps(session, status=status, limit=limit, offset=offset)
    return SweepList(items=[_sweep_out(session, sweep) for sweep in page], total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepOut, responses=error_responses(404, 422, 503))
def sweep(sweep_id: SweepId, session: SessionDep) -> SweepOut:
    """One sweep: status, every started trial (job, config, status, evaluations, node, wall time) and the best."""
    return _sweep_out(session, _sweep_or_404(session, sweep_id))


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepOut,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 409, 422, 503),
)
def cancel(sweep_id: SweepId, session: SessionDep) -> SweepOut:
    """Cancel a queued sweep now, or stop a running one: every trial stops within one episode (409 if ended)."""
    try:
        cancelled = request_cancel_sweep(session, sweep_id)
    except SweepNotFoundError:
        raise ApiError(404, "not_found", f"sweep {sweep_id} not found") from None
    except JobStateError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    session.commit()
    return _sweep_out(session, cancelled)


def _sweep_or_404(session: Session, sweep_id: int) -> Sweep:
    found = get_sweep(session, sweep_id)
    if found is None:
        raise ApiError(404, "not_found", f"sweep {sweep_id} not found")
    return found


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


def _space_field(name: str, field: str) -> Callable[[str], str]:
    """A budget error about the searched field names the dimension's value; any other is the base's."""
    return lambda budget_field: field if budget_field == name else f"base.{budget_field}"


def _check_budget(
    config: TrainingConfig, request: TrainRequest, settings: Settings, where: Callable[[str], str]
) -> None:
    """check_training_budget, with the field named where the sweep body holds it (`where(field)`)."""
    try:
        check_training_budget(config, request, settings)
    except ApiError as exc:
        if not exc.details:
            raise
        detail = exc.details[0]
        raise field_error(where(str(detail["field"])), str(detail["message"])) from None
