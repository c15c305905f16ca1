"""GET /jobs/{id}/events: server-sent events of a job's episodes and evaluations, then its final status.

In-process tests cover ended jobs (the stream replays and closes); a real uvicorn server covers the live part:
rows are written through the store API, as a worker would, while the test reads the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message

from app.infra.errors import ApiError
from app.jobs.event_hub import JobEventHub, Subscription
from app.jobs.events import Poll, job_event_response, position, read_events_after, sse
from app.schemas.jobs import EpisodeEvent, EvaluationEvent, JobEvent, StatusEvent
from store.db import create_db_engine, make_session_factory
from store.jobs import (
    claim_next_job,
    complete_job,
    enqueue_job,
    fail_job,
    record_episode,
    record_evaluation,
)
from tests.app.conftest import Api
from tests.app.factories import assert_error_shape, free_port, make_policy_bytes
from tests.app.servers import running, server_env, uvicorn_command, wait_until_ready

WORKER = "test-worker"


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


@dataclass
class SseParser:
    """The text/event-stream framing: fields until a blank line; comment lines counted apart."""

    comments: list[str] = field(default_factory=list)
    _fields: dict[str, str] = field(default_factory=dict)

    def feed(self, line: str) -> Event | None:
        if line == "":
            fields, self._fields = self._fields, {}
            if "data" not in fields:
                return None  # e.g. the `retry:` preamble
            return Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
        if line.startswith(":"):
            self.comments.append(line)
            return None
        name, _, value = line.partition(":")
        self._fields[name] = value.removeprefix(" ")
        return None


def parse_stream(text: str) -> list[Event]:
    parser = SseParser()
    events = [parser.feed(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def record(session: Session, job_id: int, episode: int, *, evaluate: bool = False) -> None:
    """Act as the worker for one episode (and the evaluation after it)."""
    record_episode(
        session,
        job_id,
        worker_id=WORKER,
        lease_seconds=300,
        episode=episode,
        episode_return=-1000.0 + 100 * episode,
        avg_return_10=-1000.0 + 50 * episode,
        env_steps=200 * (episode + 1),
        wall_time=0.5 * (episode + 1),
    )
    if evaluate:
        record_evaluation(
            session,
            job_id,
            worker_id=WORKER,
            episode=episode,
            env_steps=200 * (episode + 1),
            mean_return=-300.0 + episode,
            std_return=12.5,
            wall_time=0.5 * (episode + 1),
        )


def start_job(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        job = enqueue_job(session, config={"preset": "default", "episodes": 4}, promote="always", max_queued=10)
        claimed = claim_next_job(session, worker_id=WORKER, lease_seconds=300)
        assert claimed is not None and claimed.id == job.id
        return job.id


# ---- ended jobs, in process -------------------------------------------------------------------------------


def finished_job(api: Api, *, evaluate_after: tuple[int, ...] = (1, 3)) -> int:
    sessions = api.client.app.state.database.sessions  # type: ignore[attr-defined]
    job_id = start_job(sessions)
    with sessions() as session:
        for episode in range(4):
            record(session, job_id, episode, evaluate=episode in evaluate_after)
        complete_job(session, job_id, worker_id=WORKER, weights=make_policy_bytes(1))
    return job_id


def test_an_ended_job_replays_its_history_in_order_then_its_final_status(api: Api) -> None:
    job_id = finished_job(api)
    response = api.client.get(f"/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = parse_stream(response.text)
    assert [(e.event, e.id) for e in events] == [
        ("episode", "0"),
        ("episode", "2"),
        ("evaluation", "3"),
        ("episode", "4"),
        ("episode", "6"),
        ("evaluation", "7"),
        ("status", None),
    ]
    rewards = api.client.get(f"/jobs/{job_id}/rewards").json()
    assert [e.data for e in events if e.event == "episode"] == rewards["episodes"]
    assert [e.data for e in events if e.event == "evaluation"] == rewards["evaluations"]
    final = events[-1].data
    assert final == api.client.get(f"/jobs/{job_id}").json()
    assert final["status"] == "succeeded" and isinstance(final["policy_id"], int)


def test_last_event_id_resumes_right_after_that_event(api: Api) -> None:
    job_id = finished_job(api)
    for last_id, expected in [
        ("0", ["2", "3", "4", "6", "7", None]),
        ("3", ["4", "6", "7", None]),
        ("4", ["6", "7", None]),
        ("7", [None]),
        ("-1", ["0", "2", "3", "4", "6", "7", None]),
        ("", ["0", "2", "3", "4", "6", "7", None]),
    ]:
        response = api.client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_id})
        assert response.status_code == 200
        assert [e.id for e in parse_stream(response.text)] == expected, last_id


def test_a_failed_job_ends_with_its_error(api: Api) -> None:
    sessions = api.client.app.state.database.sessions  # type: ignore[attr-defined]
    job_id = start_job(sessions)
    with sessions() as session:
        record(session, job_id, 0)
        fail_job(session, job_id, worker_id=WORKER, error="diverged")
    events = parse_stream(api.client.get(f"/jobs/{job_id}/events").text)
    assert [e.event for e in events] == ["episode", "status"]
    assert events[-1].data["status"] == "failed" and events[-1].data["error"] == "diverged"


def test_unknown_job_is_404_and_a_bad_last_event_id_is_422(api: Api) -> None:
    response = api.client.get("/jobs/4242/events")
    assert response.status_code == 404
    assert_error_shape(response.json(), "not_found")
    job_id = finished_job(api)
    for bad in ("ep-3", "3.0", "-2", "1" * 19):
        response = api.client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": bad})
        assert response.status_code == 422, bad
        assert_error_shape(response.json(), "validation_error")


def test_every_ended_request_frees_its_stream_place(api: Api) -> None:
    """A whole stream, a 404: neither keeps a place under MAX_EVENT_STREAMS."""
    hub = api.client.app.state.job_events  # type: ignore[attr-defined]
    job_id = finished_job(api)
    assert api.client.get(f"/jobs/{job_id}/events").status_code == 200
    assert api.client.get("/jobs/4242/events").status_code == 404
    assert hub.streams == 0


def _refs(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _refs(item)


def test_events_are_documented_as_an_event_stream(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    operation = spec["paths"]["/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert any(p["name"].lower() == "last-event-id" for p in operation["parameters"])
    # One event is a oneOf of the three event models, told apart by the event name; each one's data is a JSON
    # text of the payload model (contentSchema).
    item = operation["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    assert item["discriminator"]["propertyName"] == "event"
    schemas = spec["components"]["schemas"]
    assert [ref.rsplit("/", 1)[1] for ref in _refs(item["oneOf"])] == ["EpisodeEvent", "EvaluationEvent", "StatusEvent"]
    payloads = {
        name: schemas[name]["properties"]["data"] for name in ("EpisodeEvent", "EvaluationEvent", "StatusEvent")
    }
    assert {
        name: (data["type"], data["contentMediaType"], data["contentSchema"]) for name, data in payloads.items()
    } == {
        "EpisodeEvent": ("string", "application/json", {"$ref": "#/components/schemas/EpisodeOut"}),
        "EvaluationEvent": ("string", "application/json", {"$ref": "#/components/schemas/EvaluationOut"}),
        "StatusEvent": ("string", "application/json", {"$ref": "#/components/schemas/JobOut"}),
    }
    # Every reference in the document resolves.
    assert {ref.rsplit("/", 1)[1] for ref in _refs(spec)} <= set(schemas)


def test_every_streamed_event_is_one_of_the_documented_events(api: Api) -> None:
    """What a parser makes of the stream (event name, last id, data) validates against the documented models."""
    job_id = finished_job(api)
    parsed = []
    last_id = None
    for event in parse_stream(api.client.get(f"/jobs/{job_id}/events").text):
        last_id = event.id or last_id
        fields = {"event": event.event, "data": json.dumps(event.data)}
        parsed.append(TypeAdapter(JobEvent).validate_python(fields | ({"id": last_id} if last_id else {})))
    assert [type(e) for e in parsed] == [EpisodeEvent, EpisodeEvent, EvaluationEvent] + [EpisodeEvent] * 2 + [
        EvaluationEvent,
        StatusEvent,
    ]
    final = parsed[-1]
    assert isinstance(final, StatusEvent) and final.data.id == job_id and final.data.status == "succeeded"


def test_read_events_after_positions(api: Api) -> None:
    """Event ids are positions in one sequence: each `after` gives exactly the later events."""
    job_id = finished_job(api, evaluate_after=(0, 1, 2, 3))
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        every = read_events_after(session, job_id, -1).events
        assert [position(e) for e in every] == list(range(8))
        for after in range(-1, 8):
            assert [position(e) for e in read_events_after(session, job_id, after).events] == list(range(after + 1, 8))


# ---- the stream loop, with a fake database ---------------------------------------------------------------


HEARTBEAT = b": heartbeat\n\n"


def test_heartbeats_while_idle_and_stop_when_the_client_disconnects(caplog: pytest.LogCaptureFixture) -> None:
    """The response itself, driven as an ASGI server would: the client leaves during the sixth poll."""
    polls: list[int] = []
    disconnected_after_polls = 6
    sixth_poll = threading.Event()
    release = threading.Event()
    chunks: list[bytes] = []

    def read(job_id: int, after: int) -> Poll:
        polls.append(after)
        if len(polls) == disconnected_after_polls:
            sixth_poll.set()
            release.wait(30)  # still under way when the client leaves: no later poll may start
        events = [sse("{}", event="episode", id=0)] if after < 0 else []
        return Poll(events, None)

    async def receive() -> Message:
        # Gone once the sixth poll runs and a heartbeat has been sent since (the last poll found nothing new).
        while not (sixth_poll.is_set() and chunks[-1:] == [HEARTBEAT]):
            await asyncio.sleep(0.001)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message["body"])

    async def serve() -> JobEventHub:
        hub = JobEventHub(read, max_streams=10, poll_seconds=0.001)
        subscription = await hub.follow(1)
        response = job_event_response(subscription.events(-1), subscription.release, heartbeat_seconds=0.02)
        try:
            await response({"type": "http", "method": "GET", "headers": []}, receive, send)
        finally:
            release.set()
        await asyncio.sleep(0.05)  # a poller still running would poll again meanwhile
        await hub.close()
        return hub

    with caplog.at_level(logging.DEBUG, logger="app.jobs.events"):
        hub = asyncio.run(serve())
    episode = sse("{}", event="episode", id=0).encode()
    assert episode == b"id: 0\nevent: episode\ndata: {}\n\n"
    # The retry preamble, the one event, then only heartbeats (a ping may come at any time, even early).
    retry, *rest = [c for c in chunks if c != HEARTBEAT]
    assert retry.startswith(b"retry: ") and rest == [episode]
    assert HEARTBEAT in chunks[chunks.index(episode) + 1 :]
    # The poller's position advances with what it read, and it stops once its only client is gone (no final status).
    assert polls == [-1] + [0] * (disconnected_after_polls - 1)
    assert "event stream: client disconnected" in caplog.text
    assert hub.streams == 0


def _collect(subscription: Subscription, after: int) -> Coroutine[Any, Any, list[bytes]]:
    async def collect() -> list[bytes]:
        return [event.encode() async for event in subscription.events(after)]

    return collect()


def test_a_database_error_does_not_end_the_stream() -> None:
    calls: list[int] = []

    def read(job_id: int, after: int) -> Poll:
        calls.append(after)
        if len(calls) == 2:
            raise OSError("database went away")
        return Poll([], sse('{"status": "succeeded"}', event="status") if len(calls) == 3 else None)

    async def follow() -> list[bytes]:
        hub = JobEventHub(read, max_streams=10, poll_seconds=0.001)
        return await _collect(await hub.follow(7), 5)

    chunks = asyncio.run(follow())
    assert calls == [-1, -1, -1] and chunks[-1].startswith(b"event: status")


def test_the_first_read_failing_fails_every_waiting_client_and_the_next_one_reads_again() -> None:
    calls: list[int] = []

    def read(job_id: int, after: int) -> Poll:
        calls.append(job_id)
        if len(calls) == 1:
            time.sleep(0.05)  # both clients wait on this read
            raise OSError("database went away")
        return Poll([], None, gone=True)

    async def follow() -> tuple[list[BaseException | Subscription], Subscription]:
        hub = JobEventHub(read, max_streams=10, poll_seconds=0.001)
        first = await asyncio.gather(hub.follow(3), hub.follow(3), return_exceptions=True)
        assert hub.streams == 0
        return first, await hub.follow(3)

    first, later = asyncio.run(follow())
    assert [type(outcome) for outcome in first] == [OSError, OSError]
    assert later.feed.gone and calls == [3, 3]


def test_every_client_of_a_job_shares_one_poller() -> None:
    """Fifty clients, one read per polling interval; each gets the whole history and the status."""
    reads: list[int] = []

    def read(job_id: int, after: int) -> Poll:
        reads.append(after)
        if len(reads) < 4:
            return Poll([sse("{}", event="episode", id=2 * len(reads))], None)
        return Poll([], sse("{}", event="status"))

    async def follow() -> list[list[bytes]]:
        hub = JobEventHub(read, max_streams=100, poll_seconds=0.01)
        subscriptions = [await hub.follow(5) for _ in range(50)]
        streams = await asyncio.gather(*(_collect(s, -1) for s in subscriptions))
        assert hub.streams == 0
        return streams

    streams = asyncio.run(follow())
    assert reads == [-1, 2, 4, 6]
    assert all(stream == streams[0] for stream in streams) and len(streams[0]) == 1 + 3 + 1


def test_past_max_event_streams_a_503_with_retry_after() -> None:
    def read(job_id: int, after: int) -> Poll:
        return Poll([], None)

    async def follow() -> None:
        hub = JobEventHub(read, max_streams=2, poll_seconds=0.01)
        held = [await hub.follow(1), await hub.follow(2)]
        with pytest.raises(ApiError) as refused:
            await hub.follow(1)
        assert refused.value.status_code == 503 and refused.value.code == "too_many_event_streams"
        assert refused.value.headers == {"Retry-After": "5"}
        held[0].release()
        held[0].release()  # released once, however often it is called
        assert hub.streams == 1
        (await hub.follow(3)).release()
        await hub.close()

    asyncio.run(follow())


# ---- live, against a real server --------------------------------------------------------------------------


class LiveStream:
    """Reads events off an open streaming response, one at a time, as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()
        self._parser = SseParser()

    def next_event(self) -> Event:
        for line in self._lines:
            event = self._parser.feed(line)
            if event is not None:
                return event
        raise AssertionError("the stream ended")

    def rest(self) -> list[Event]:
        return [e for e in (self._parser.feed(line) for line in self._lines) if e is not None]


@contextlib.contextmanager
def live_server(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = server_env(tmp_path / "data", DATABASE_URL=database_url, LOG_LEVEL="DEBUG", EVENT_POLL_SECONDS="0.1")
    with running(uvicorn_command(port, 1), env, log_path) as process:
        wait_until_ready(base_url, process, log_path, path="/jobs")
        yield base_url, log_path


@pytest.mark.slow
def test_live_stream_follows_the_job_resumes_and_ends_with_its_status(tmp_path: Path, database_url: str) -> None:
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    # A read timeout bounds each wait for the next event (the server polls every 0.1 s); it is not a timing check.
    timeout = httpx.Timeout(5.0, read=20.0)
    try:
        with (
            live_server(tmp_path, database_url) as (base_url, log_path),
            httpx.Client(base_url=base_url, timeout=timeout) as client,
        ):
            job_id = start_job(sessions)
            with client.stream("GET", f"/jobs/{job_id}/events") as response:
                assert response.status_code == 200
                stream = LiveStream(response)
                with sessions() as session:
                    record(session, job_id, 0)
                first = stream.next_event()
                assert (first.event, first.id, first.data["episode"]) == ("episode", "0", 0)
                with sessions() as session:
                    record(session, job_id, 1, evaluate=True)
                assert [(e.event, e.id) for e in (stream.next_event(), stream.next_event())] == [
                    ("episode", "2"),
                    ("evaluation", "3"),
                ]
                last_seen = "3"

            # Disconnected: the server stops following this stream.
            deadline = time.monotonic() + 20
            while "event stream: client disconnected" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)

            # Progress made while nobody listened arrives on reconnect, from right after the last event seen.
            with sessions() as session:
                record(session, job_id, 2)
                record(session, job_id, 3)
            with client.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_seen}) as response:
                stream = LiveStream(response)
                assert [stream.next_event().id for _ in range(2)] == ["4", "6"]
                with sessions() as session:
                    record_evaluation(
                        session,
                        job_id,
                        worker_id=WORKER,
                        episode=3,
                        env_steps=800,
                        mean_return=-180.0,
                        std_return=3.0,
                        wall_time=2.0,
                    )
                    complete_job(session, job_id, worker_id=WORKER, weights=make_policy_bytes(2))
                evaluation = stream.next_event()
                assert (evaluation.event, evaluation.id, evaluation.data["mean_return"]) == ("evaluation", "7", -180.0)
                status = stream.next_event()
                assert status.event == "status" and status.data["status"] == "succeeded"
                assert status.data["policy_id"] is not None
                assert stream.rest() == []  # the server closed the stream after the status
    finally:
        engine.dispose()
