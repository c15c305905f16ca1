"""Server-sent events of a training job: its episodes and evaluations as they are written, then its final state.

The worker commits an episode, then (sometimes) the evaluation that ran after it, then the next episode, so
every snapshot of the history is a prefix of one sequence. Each event's id is its position in that sequence
(episode e -> 2e, the evaluation after episode e -> 2e + 1): an integer that a client hands back as
`Last-Event-ID` to resume exactly after the last event it saw, whatever it missed in between.

The stream polls the database (in a thread, never on the event loop), so it works the same across API
replicas and with either database, at the cost of up to one polling interval of delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.infra.errors import field_error
from app.jobs.presenters import job_out, rewards_out
from models.training_config import TERMINAL_STATUSES
from store.jobs import get_job
from store.tables import EpisodeRow, EvaluationRow

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# Proxies and load balancers close idle connections (nginx after 60 s by default); a comment line well
# within that keeps a stream open while a job waits in the queue or runs a long episode.
HEARTBEAT_SECONDS = 15.0
# How long a browser's EventSource waits before reconnecting after a dropped connection.
RETRY_MILLISECONDS = 2000
MAX_EVENT_ID = 2**62


def episode_event_id(episode: int) -> int:
    return 2 * episode


def evaluation_event_id(episode: int) -> int:
    return 2 * episode + 1


def parse_last_event_id(value: str | None) -> int:
    """The `Last-Event-ID` header as the position to resume after; -1 (replay everything) when absent."""
    if value is None or not value.strip():
        return -1
    try:
        position = int(value.strip())
    except ValueError:
        raise field_error("Last-Event-ID", "must be an event id from this stream (an integer)") from None
    if not -1 <= position <= MAX_EVENT_ID:
        raise field_error("Last-Event-ID", f"must be between -1 and {MAX_EVENT_ID}")
    return position


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its type, JSON data and (for history rows) its id."""

    event: str
    data: str
    id: int | None = None

    def encode(self) -> bytes:
        lines = [f"event: {self.event}"]
        if self.id is not None:
            lines.append(f"id: {self.id}")
        # The data is one line of JSON; SSE would need one `data:` per line otherwise.
        lines.append(f"data: {self.data}")
        return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll found: the new history events in order, and the final state if the job has ended."""

    events: list[SseEvent]
    final: SseEvent | None
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
    status = job.status
    final_job = job_out(job) if status in TERMINAL_STATUSES else None
    # Episode e is new when 2e > after, i.e. e >= after // 2 + 1; an evaluation when 2e + 1 > after, which
    # e >= after // 2 bounds from below (the query) and the filter below makes exact.
    first_episode = after // 2 + 1
    first_evaluation = max(0, after // 2)
    episodes = list(
        session.scalars(
            select(EpisodeRow)
            .where(EpisodeRow.job_id == job_id, EpisodeRow.episode >= first_episode)
            .order_by(EpisodeRow.episode)
        )
    )
    evaluations = [
        row
        for row in session.scalars(
            select(EvaluationRow)
            .where(EvaluationRow.job_id == job_id, EvaluationRow.episode >= first_evaluation)
            .order_by(EvaluationRow.episode)
        )
        if evaluation_event_id(row.episode) > after
    ]
    history = rewards_out(job, episodes, evaluations)
    events = [SseEvent("episode", row.model_dump_json(), episode_event_id(row.episode)) for row in history.episodes] + [
        SseEvent("evaluation", row.model_dump_json(), evaluation_event_id(row.episode)) for row in history.evaluations
    ]
    # Sorting by id interleaves each evaluation right after the episode it followed.
    events.sort(key=lambda event: event.id or 0)
    final = SseEvent("status", final_job.model_dump_json()) if final_job is not None else None
    return Poll(events, final)


ReadPoll = Callable[[int], Poll]


async def job_event_stream(
    read: ReadPoll,
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_seconds: float = POLL_SECONDS,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> AsyncIterator[bytes]:
    """Replay the history after `after`, follow it live, end with the final `status` event.

    `read(after)` is blocking (a database query) and runs in a thread. Database errors do not end the
    stream: the client keeps its position, and the next poll picks up where this one failed.
    """
    try:
        async with contextlib.aclosing(
            _follow(read, after, is_disconnected, poll_seconds, heartbeat_seconds)
        ) as chunks:
            async for chunk in chunks:
                yield chunk
    except asyncio.CancelledError:
        # Starlette cancels the response when the client disconnects: the usual way a live stream ends.
        logger.debug("event stream: client disconnected")
        raise


async def _follow(
    read: ReadPoll,
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_seconds: float,
    heartbeat_seconds: float,
) -> AsyncGenerator[bytes, None]:
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    last_sent = time.monotonic()
    failing = False
    while True:
        # Servers that do not cancel the response on disconnect (ASGI spec 2.4) are noticed here.
        if await is_disconnected():
            logger.debug("event stream: client disconnected")
            return
        try:
            poll = await asyncio.to_thread(read, after)
        except Exception as exc:
            if not failing:
                logger.warning("event stream: cannot read the job's history; retrying: %s", exc)
            failing = True
            poll = Poll([], None)
        else:
            failing = False
        if poll.gone:
            return
        for event in poll.events:
            yield event.encode()
            after = event.id if event.id is not None else after
            last_sent = time.monotonic()
        if poll.final is not None:
            yield poll.final.encode()
            return
        if time.monotonic() - last_sent >= heartbeat_seconds:
            # A comment line: ignored by EventSource, but it is traffic, so idle-timeouts do not fire.
            yield b": heartbeat\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_seconds)
