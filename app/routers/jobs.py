"""Training jobs: list, inspect, cancel, and their reward histories (JSON, CSV, PNG)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.deps import ApiKeyDep, SessionDep
from app.errors import ApiError
from app.presenters import job_out, rewards_out
from app.rewards import rewards_csv, rewards_png
from app.schemas import JobList, JobOut, JobStatus, RewardsOut, error_responses
from store.jobs import (
    JobNotFoundError,
    JobStateError,
    episode_history,
    evaluation_history,
    get_job,
    list_jobs,
    request_cancel,
)
from store.tables import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])

# Ids are 32-bit integers in PostgreSQL: a bigger number is a bad request, not a database error.
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The job's id.")]


def _job_or_404(session: Session, job_id: int) -> Job:
    job = get_job(session, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id} not found")
    return job


@router.get("", response_model=JobList, responses=error_responses(422, 503))
def jobs(
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JobList:
    """Jobs, newest first, optionally of one status; paginated with the total count."""
    page, total = list_jobs(session, status=status, limit=limit, offset=offset)
    return JobList(items=[job_out(job) for job in page], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404, 422, 503))
def job(job_id: JobId, session: SessionDep) -> JobOut:
    """One job: status, progress (episodes, env steps, last return, best evaluation), policy id, error."""
    return job_out(_job_or_404(session, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 409, 422, 503),
)
def cancel(job_id: JobId, session: SessionDep) -> JobOut:
    """Cancel a queued job now, or ask the worker to stop a running one within one episode (409 if ended)."""
    try:
        cancelled = request_cancel(session, job_id)
    except JobNotFoundError:
        raise ApiError(404, "not_found", f"job {job_id} not found") from None
    except JobStateError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    session.commit()
    return job_out(cancelled)


def _wants_csv(format_: str | None, accept: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    return accept is not None and "text/csv" in accept.lower()


@router.get(
    "/{job_id}/rewards",
    response_model=RewardsOut,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "JSON by default; CSV with `?format=csv` or `Accept: text/csv`.",
        },
        **error_responses(404, 422, 503),
    },
)
def rewards(
    job_id: JobId,
    session: SessionDep,
    format: Annotated[Literal["json", "csv"] | None, Query(description="Overrides the Accept header.")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> RewardsOut | Response:
    """The reward history so far (per episode and per evaluation), as JSON or CSV; works while the job runs."""
    history = rewards_out(
        _job_or_404(session, job_id), episode_history(session, job_id), evaluation_history(session, job_id)
    )
    if _wants_csv(format, accept):
        return Response(
            rewards_csv(history),
            media_type="text/csv",
            headers={"Content-Disposition": f'inline; filename="job-{job_id}-rewards.csv"'},
        )
    return history


@router.get(
    "/{job_id}/rewards.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The learning curve."},
        **error_responses(404, 422, 503),
    },
)
def rewards_plot(job_id: JobId, session: SessionDep) -> Response:
    """The learning curve as a PNG: returns, their 10-episode average and the evaluations."""
    history = rewards_out(
        _job_or_404(session, job_id), episode_history(session, job_id), evaluation_history(session, job_id)
    )
    # Render after the session's work is done; the session closes when the request ends.
    return Response(rewards_png(history), media_type="image/png", headers={"Cache-Control": "no-store"})
