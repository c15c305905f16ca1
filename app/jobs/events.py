"""Server-sent events of a training job: its episodes and evaluations as they are written, then its final state.

The worker commits an episode, then (sometimes) the evaluation that ran after it, then the next episode, so
every snapshot of the history is a prefix of one sequence. Each event's id is its position in that sequence
(episode e -> 2e, the evaluation after episode e -> 2e + 1): an integer that a client hands back as
`Last-Event-ID` to resume exactly after the last event it saw, whatever it missed in between.

The streams of a job share one poller (app.jobs.event_hub), which reads the database in a thread, never on the
event loop, so it works the same across API replicas and with either database, at the cost of up to one polling
interval of delay. sse-starlette does the
protocol: the framing, keep-alive comments, noticing a client that went away, and ending streams on shutdown.
The events on the wire are documented by the models in `app.schemas.jobs` (`JobEvent`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.types import Message

from app.schemas.jobs import EpisodeOut, EvaluationOut, JobOut
from models.training_config import TERMINAL_STATUSES
from store.jobs import get_job
from store.tables.work_queues import EpisodeRow, EvaluationRow

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# Proxies and load balancers close idle connections (nginx after 60 s by default); a comment line well
# within that keeps a stream open while a job waits in the queue or runs a long episode.
HEARTBEAT_SECONDS = 15.0
# How long a browser's EventSource waits before reconnecting after a dropped connection.
RETRY_MILLISECONDS = 2000
# What `Last-Event-ID` may be: an id of this stream, or -1 (replay everything, as when it is absent or empty).
# Ids are 2 x episode + 1 at most; 18 digits bound them far beyond any job while staying a 64-bit integer.
LAST_EVENT_ID_PATTERN = r"^(-1|[0-9]{1,18})?$"
# Lines end in LF, as they always have here (sse-starlette's default is CRLF; both are valid SSE).
LINE_SEPARATOR = "\n"


def episode_event_id(episode: int) -> int:
    return 2 * episode


def evaluation_event_id(episode: int) -> int:
    return 2 * episode + 1


def parse_last_event_id(value: str) -> int:
    """The `Last-Event-ID` header (already matched against LAST_EVENT_ID_PATTERN) as the position to resume
    after; -1 (replay everything) when empty."""
    return int(value) if value else -1


def sse(
    data: str | None = None,
    *,
    event: str | None = None,
    id: int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> ServerSentEvent:
    """One server-sent event (or comment) framed the way this stream frames them."""
    return ServerSentEvent(
        data,
        event=event,
        id=None if id is None else str(id),
        retry=retry,
        comment=comment,
        sep=LINE_SEPARATOR,
    )


def position(event: ServerSentEvent) -> int:
    """A history event's position in the sequence (its id)."""
    if event.id is None:
        raise ValueError(f"a {event.event!r} event has no id")
    return int(event.id)


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll found: the new history events in order, and the final state if the job has ended."""

    events: list[ServerSentEvent]
    final: ServerSentEvent | None
    # The job no longer exists (deleted while streaming): the stream ends without a status.
    gone: bool = False


def read_events_after(session: Session, job_id: int, after: int) -> Poll:
    """The job's history events with an id greater than `after`, and its final state when it has ended.

    The job row is read before the history: a job seen as ended has committed all of its history already,
    so the events returned with a final state are complete.
    """
    job = get_job(session, job_id)
    if job is None:
        return Poll([], None, gone=True)
    ended = job.status in TERMINAL_STATUSES
    final = sse(JobOut.model_validate(job).model_dump_json(), event="status") if ended else None
    # Episode e is new when 2e > after, i.e. e >= after // 2 + 1; an evaluation when 2e + 1 > after, which
    # e >= after // 2 bounds from below (the query) and the filter below makes exact.
    first_episode = after // 2 + 1
    first_evaluation = max(0, after // 2)
    episodes = session.scalars(
        select(EpisodeRow)
        .where(EpisodeRow.job_id == job_id, EpisodeRow.episode >= first_episode)
        .order_by(EpisodeRow.episode)
    )
    evaluations = session.scalars(
        select(EvaluationRow)
        .where(EvaluationRow.job_id == job_id, EvaluationRow.episode >= first_evaluation)
        .order_by(EvaluationRow.episode)
    )
    events = [
        sse(EpisodeOut.model_validate(row).model_dump_json(), event="episode", id=episode_event_id(row.episode))
        for row in episodes
    ]
    for row in evaluations:
        if (event_id := evaluation_event_id(row.episode)) > after:
            events.append(sse(EvaluationOut.model_validate(row).model_dump_json(), event="evaluation", id=event_id))
    # Sorting by id interleaves each evaluation right after the episode it followed.
    events.sort(key=position)
    return Poll(events, final)


def job_events_reader(sessions: sessionmaker[Session]) -> Callable[[int, int], Poll]:
    """`read(job_id, after)`: `read_events_after` in a session of its own (what a job's poller calls)."""

    def read(job_id: int, after: int) -> Poll:
        with sessions() as session:
            return read_events_after(session, job_id, after)

    return read


async def _client_went_away(message: Message) -> None:
    logger.debug("event stream: client disconnected")


def job_event_response(
    events: AsyncIterator[ServerSentEvent],
    release: Callable[[], None],
    *,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> EventSourceResponse:
    """The `text/event-stream` response of a subscription's `events`, with a `: heartbeat` comment every
    `heartbeat_seconds` (a comment is ignored by EventSource, but it is traffic, so idle-timeouts do not fire).

    `release` runs once the response is over (also when its stream never started), on the event loop: the hub it
    updates is the loop's alone (its counts, and the poller task it may cancel, which no other thread may do). A
    plain function as the background task would run in the thread pool instead: a thread hop for every stream
    that ends, which made closing a thousand idle streams cost more CPU than opening them."""

    async def release_on_the_loop() -> None:
        release()

    return EventSourceResponse(
        events,
        # Revalidate, never reuse: what "no-cache" always said here (sse-starlette's default is "no-store").
        headers={"Cache-Control": "no-cache"},
        ping=heartbeat_seconds,
        ping_message_factory=lambda: sse(comment="heartbeat"),
        sep=LINE_SEPARATOR,
        client_close_handler_callable=_client_went_away,
        background=BackgroundTask(release_on_the_loop),
    )
