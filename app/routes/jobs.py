"""Training jobs: list, inspect, cancel, their reward histories (JSON, CSV, PNG) and their live events (SSE)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from pydantic import TypeAdapter
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from app.infra.errors import found_or_404, not_found
from app.jobs.events import LAST_EVENT_ID_PATTERN, job_event_response, parse_last_event_id
from app.jobs.rewards import rewards_csv, rewards_png
from app.routes.deps import ApiKeyDep, JobEventHubDep, PageDep, ReadyDatabaseDep, SessionDep
from app.schemas.errors import cancel_responses, error_responses, file_responses
from app.schemas.jobs import JobEvent, JobList, JobOut, RewardsOut
from app.services.queue import cancel as cancel_leased
from models.training_config import JobStatus
from store.jobs import JobNotFoundError, episode_history, evaluation_history, get_job, list_jobs, request_cancel
from store.tables.work_queues import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])

# Ids are 32-bit integers in PostgreSQL: a bigger number is a bad request, not a database error.
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The job's id.")]
StatusQuery = Annotated[JobStatus | None, Query(description="Only jobs in this state.")]


def _job_or_404(session: Session, job_id: int) -> Job:
    return found_or_404(get_job(session, job_id), "job", job_id)


@router.get("", response_model=JobList, responses=error_responses(422, 503))
def jobs(session: SessionDep, page: PageDep, status: StatusQuery = None) -> JobList:
    """Jobs, newest first, optionally of one status; paginated with the total count."""
    rows, total = list_jobs(session, status=status, limit=page.limit, offset=page.offset)
    items = [JobOut.model_validate(job) for job in rows]
    return JobList(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404, 422, 503))
def job(job_id: JobId, session: SessionDep) -> JobOut:
    """One job: status, progress (episodes, env steps, last return, best evaluation), policy id, error."""
    return JobOut.model_validate(_job_or_404(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[ApiKeyDep], responses=cancel_responses())
def cancel(job_id: JobId, session: SessionDep) -> JobOut:
    """Cancel a queued job now, or ask the worker to stop a running one within one episode (409 if ended)."""
    return JobOut.model_validate(cancel_leased(session, "job", job_id, request_cancel, JobNotFoundError))


def _history(session: Session, job_id: int) -> RewardsOut:
    job = _job_or_404(session, job_id)
    return RewardsOut.model_validate(
        {
            "job_id": job.id,
            "status": job.status,
            "episodes": episode_history(session, job_id),
            "evaluations": evaluation_history(session, job_id),
        }
    )


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
    history = _history(session, job_id)
    if _wants_csv(format, accept):
        return Response(
            rewards_csv(history),
            media_type="text/csv",
            headers={"Content-Disposition": f'inline; filename="job-{job_id}-rewards.csv"'},
        )
    return history


@router.get(
    "/{job_id}/rewards.png", response_class=Response, responses=file_responses("image/png", "The learning curve.")
)
def rewards_plot(job_id: JobId, session: SessionDep) -> Response:
    """The learning curve as a PNG: returns, their 10-episode average and the evaluations."""
    history = _history(session, job_id)
    # Render after the session's work is done; the session closes when the request ends.
    return Response(rewards_png(history), media_type="image/png", headers={"Cache-Control": "no-store"})


_EVENTS_DESCRIPTION = """One `episode` event per episode and one `evaluation` event per evaluation (their data are the
rows of `/jobs/{id}/rewards`, as JSON), in the order they happened, replayed from the start and then live; then
one `status` event with the job (as `GET /jobs/{id}`) once it has ended, and the stream closes. Each history event
has an `id`; send the last one seen as `Last-Event-ID` to resume after it (browsers' EventSource does this when it
reconnects). Comment lines (`: heartbeat`) keep idle connections open.

`itemSchema` describes one event as a client's parser sees it (`event`, `id`, and `data`: a JSON text, whose
`contentSchema` is the payload's model), as OpenAPI 3.2 defines it for `text/event-stream`."""

# One event as a parser sees it: a `oneOf` of the event models (discriminated by the event name), referring to
# their components; `response_model=JobEvent` below is what puts those models under components.
_EVENT_ITEM_SCHEMA = {
    key: value
    for key, value in TypeAdapter(JobEvent).json_schema(ref_template="#/components/schemas/{model}").items()
    if key != "$defs"
}


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    # Documentation only: the endpoint returns the stream itself, which FastAPI passes through unvalidated.
    response_model=JobEvent,
    responses={
        200: {
            "content": {"text/event-stream": {"itemSchema": _EVENT_ITEM_SCHEMA}},
            "description": _EVENTS_DESCRIPTION,
        },
        **error_responses(404, 422, 503),
    },
)
async def events(
    job_id: JobId,
    database: ReadyDatabaseDep,
    hub: JobEventHubDep,
    # A string, never null: a header has no null, and "null" is no event id.
    last_event_id: Annotated[
        str,
        Header(
            pattern=LAST_EVENT_ID_PATTERN,
            description="Resume after this event id (sent by EventSource on reconnect); -1 or empty: from the start.",
        ),
    ] = "",
) -> EventSourceResponse:
    """Live progress as server-sent events: episodes and evaluations as they happen, then the final status."""
    # The job's feed is shared by all its streams; its first read decides between 404 and a stream (ReadyDatabaseDep:
    # 503 while the database is not prepared; the hub: 503 past MAX_EVENT_STREAMS).
    subscription = await hub.follow(job_id)
    if subscription.feed.gone:
        subscription.release()
        raise not_found("job", job_id)
    return job_event_response(subscription.events(parse_last_event_id(last_event_id)), subscription.release)
