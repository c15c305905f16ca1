"""One shared poller per followed job, however many clients follow it, and a cap on the streams a process holds.

Each `GET /jobs/{id}/events` used to poll the database itself, every 0.5 s, through asyncio's default executor: 400
idle clients delayed a promotion's arrival at `/act` to seconds, and 1,500 made `/readyz` answer 503 on a healthy
database. Now a job's history is read by one task (a `JobFeed`) while anyone follows it, on the hub's own threads
(`EVENT_THREADS`); each client only reads the feed's memory and waits for its next change. The first client of a job
waits for the feed's first read, which decides between 404 and a stream; the last one to leave stops the poller.

A feed keeps the job's whole history from the start (one short JSON per episode and evaluation, bounded by the
training budget) so a client resuming from any `Last-Event-ID` is served from memory.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from sse_starlette import ServerSentEvent

from app.infra.errors import ApiError
from app.jobs.events import POLL_SECONDS, RETRY_MILLISECONDS, Poll, position, sse

logger = logging.getLogger(__name__)

# Threads reading job histories, shared by every feed of the process: the database work of the event streams is
# bounded by this, not by the number of clients.
EVENT_THREADS = 4
STREAMS_RETRY_AFTER_SECONDS = 5

# (job id, position to read after) -> the events after it: blocking, a database query.
ReadJobEvents = Callable[[int, int], Poll]


class JobFeed:
    """One job's events as its poller has read them, for every client that follows the job."""

    def __init__(self) -> None:
        self.events: list[ServerSentEvent] = []
        self._positions: list[int] = []
        self.final: ServerSentEvent | None = None
        self.gone = False
        self.error: BaseException | None = None  # the first read failed: every waiting client gets it
        self.ready = asyncio.Event()  # the first read is done (or failed)
        self.next_change = asyncio.Event()  # set (and replaced) by every change
        self.followers = 0
        self.poller: asyncio.Task[None] | None = None

    @property
    def last_position(self) -> int:
        return self._positions[-1] if self._positions else -1

    @property
    def ended(self) -> bool:
        return self.final is not None or self.gone

    def add(self, poll: Poll) -> None:
        """Append what a poll found and wake every client waiting for a change."""
        for event in poll.events:
            if (event_position := position(event)) > self.last_position:
                self.events.append(event)
                self._positions.append(event_position)
        self.final = poll.final
        self.gone = poll.gone
        self.ready.set()
        if poll.events or self.ended:
            self.next_change.set()
            self.next_change = asyncio.Event()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ready.set()

    def after(self, after: int) -> list[ServerSentEvent]:
        """The events with a position greater than `after`."""
        return self.events[bisect.bisect_right(self._positions, after) :]


class Subscription:
    """One client's hold on a feed (and one of the process's event streams), released exactly once."""

    def __init__(self, hub: JobEventHub, job_id: int, feed: JobFeed) -> None:
        self._hub = hub
        self.job_id = job_id
        self.feed = feed
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._hub.unfollow(self.job_id, self.feed)

    async def events(self, after: int) -> AsyncIterator[ServerSentEvent]:
        """The retry preamble, the history after `after`, then new events as the feed gets them, then the final
        status (none when the job was deleted meanwhile). Releases the subscription when it ends or is closed."""
        try:
            yield sse(retry=RETRY_MILLISECONDS)
            feed = self.feed
            while True:
                # Taken before reading, so a change made while the events below are sent is not missed.
                next_change = feed.next_change
                for event in feed.after(after):
                    yield event
                    after = position(event)
                if feed.final is not None:
                    yield feed.final
                    return
                if feed.gone:
                    return
                await next_change.wait()
        finally:
            self.release()


class JobEventHub:
    """The process's job feeds, their pollers and threads, and the count of open streams (MAX_EVENT_STREAMS)."""

    def __init__(self, read: ReadJobEvents, *, max_streams: int, poll_seconds: float = POLL_SECONDS) -> None:
        self._read = read
        self.max_streams = max_streams
        self._poll_seconds = poll_seconds
        self._feeds: dict[int, JobFeed] = {}
        self.streams = 0
        self._executor = ThreadPoolExecutor(max_workers=EVENT_THREADS, thread_name_prefix="job-events")

    async def follow(self, job_id: int) -> Subscription:
        """A subscription to the job's feed once its first read is done: 503 past MAX_EVENT_STREAMS, 404 for an
        unknown job (`gone`), the first read's own exception when it failed (a database error is a 503)."""
        if self.streams >= self.max_streams:
            raise ApiError(
                503,
                "too_many_event_streams",
                f"this server already holds {self.max_streams} event streams (MAX_EVENT_STREAMS); retry later",
                headers={"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)},
            )
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = JobFeed()
            feed.poller = asyncio.create_task(self._poll(job_id, feed), name=f"job-events-{job_id}")
        feed.followers += 1
        self.streams += 1
        subscription = Subscription(self, job_id, feed)
        try:
            await feed.ready.wait()
        except BaseException:
            subscription.release()
            raise
        if feed.error is not None:
            subscription.release()
            raise feed.error
        return subscription

    def unfollow(self, job_id: int, feed: JobFeed) -> None:
        feed.followers -= 1
        self.streams -= 1
        if feed.followers == 0 and self._feeds.get(job_id) is feed:
            del self._feeds[job_id]
            if feed.poller is not None:
                feed.poller.cancel()

    async def _poll(self, job_id: int, feed: JobFeed) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            try:
                poll = await loop.run_in_executor(self._executor, self._read, job_id, feed.last_position)
            except Exception as exc:
                if not feed.ready.is_set():
                    # Nothing to stream yet: the clients waiting get the error, the next one starts a new feed.
                    if self._feeds.get(job_id) is feed:
                        del self._feeds[job_id]
                    feed.fail(exc)
                    return
                # Database errors do not end the streams: the next poll picks up where this one failed.
                if not failing:
                    logger.warning("event stream of job %d: cannot read its history; retrying: %s", job_id, exc)
                failing = True
            else:
                failing = False
                feed.add(poll)
                if feed.ended:
                    return
            await asyncio.sleep(self._poll_seconds)

    async def close(self) -> None:
        """Stop every poller and the threads (at shutdown; sse-starlette ends the streams themselves)."""
        pollers = [feed.poller for feed in self._feeds.values() if feed.poller is not None]
        self._feeds.clear()
        for poller in pollers:
            poller.cancel()
        for poller in pollers:
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        self._executor.shutdown(wait=False, cancel_futures=True)
