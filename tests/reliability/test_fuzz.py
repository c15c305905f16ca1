"""Property-based fuzzing of every endpoint from the OpenAPI schema (schemathesis) against a running server.

A real `python -m app` (uvicorn) with a registered random policy (POLICY_FILE), an API key (API_KEY, and the same
key as ACT_API_KEY), a small queue limit, and two jobs written as a worker would: one finished (episodes,
evaluations, its policy) and one still running. Each operation gets a bounded number of generated requests,
schema-valid and schema-violating, sent once with the key (so the mutating endpoints really run) and once without.
Every check schemathesis has runs on each response (`--checks all`; one documented exclusion, RUNTIME_VALIDATED):
a non-5xx with a status code, content type, headers and body that the OpenAPI document declares for that
operation; schema-violating requests refused and schema-valid ones accepted; and every success of an operation
that declares the key refused again without the key and with a wrong one.

That includes the server-sent events of `GET /jobs/{job_id}/events`: schemathesis parses a `text/event-stream`
response into events and checks each one against the operation's `itemSchema`, and each event's `data` (a JSON
text) against its `contentSchema` (part of `response_schema_conformance`; nothing to switch on). It reads a stream
until the server closes it, `max-stream-events` events have arrived, or `request-timeout` has passed: a finished
job's stream ends by itself, a running job's is cut short after STREAM_SECONDS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import orjson
import pytest
import schemathesis
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import CHECKS as ALL_CHECKS
from schemathesis.checks import CheckContext, CheckFunction, is_check_class, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi._hypothesis import can_negate_path_parameters
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance, response_schema_conformance
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from store.db import create_db_engine, make_session_factory
from store.jobs import claim_next_job, complete_job, enqueue_job, record_episode, record_evaluation
from tests.app.factories import make_policy_bytes
from tests.reliability.conftest import API_KEY, Api, Processes

pytestmark = pytest.mark.slow

# Per operation and generation phase; ~14 operations x 2 identities stay within about a minute on 2 cores.
MAX_EXAMPLES = 12
# Every check schemathesis has (the Python API's `--checks all`): those that compare one response with the
# document, those that re-send a 2xx request without and with a wrong key (`ignored_auth`: a write that declares the
# key must refuse both), and those that need a phase or a run this test does not have (`unsupported_method` and
# `missing_required_header`: the coverage phase; `use_after_free`, `ensure_resource_availability` and
# `object_level_authorization`: a stateful run with several identities). Those last find nothing to check here:
# tests/app/test_openapi_strictness.py checks a 405's `Allow` directly. The one exclusion is per operation
# (RUNTIME_VALIDATED, below).
load_all_checks()
# Operations whose success was sent again without the key and with a wrong one, and refused both times.
_AUTH_ENFORCED: set[str] = set()


def ignored_auth_once(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """`ignored_auth` as schemathesis's own runs use it: enforcement is a property of the operation, so once one
    success of it has been refused without the key and with a wrong one, its later successes are not probed again
    (two more requests each)."""
    if case.operation.label in _AUTH_ENFORCED:
        return None
    ignored_auth(ctx, response, case)  # raises when the operation let either probe through
    if 200 <= response.status_code < 300:
        _AUTH_ENFORCED.add(case.operation.label)
    return None


CHECKS: list[CheckFunction] = [
    ignored_auth_once if check is ignored_auth else check for check in ALL_CHECKS.get_all() if not is_check_class(check)
]
# Schema-valid requests these may rightly refuse with a documented 4xx (422 on the service's own routes): /act checks
# the observation length against the chosen policy's obs_dim, and /train the server's configured budget and
# replay_size >= batch_size; a new model's environment must be installed with Box spaces, and an alias or a rollout
# must name one of the model's own policies (not its champion, for a challenger). None is a static property of the
# schema. Every other check still applies to them.
RUNTIME_VALIDATED = {
    ("POST", "/act"),
    ("POST", "/train"),
    ("POST", "/models"),
    ("PUT", "/models/{name}/aliases/{alias}"),
    ("DELETE", "/models/{name}/aliases/{alias}"),
    ("PUT", "/models/{name}/rollout"),
    # A learner's config is resolved and budgeted as /train's; the model must have finite action bounds.
    ("PUT", "/models/{name}/learner"),
    # A sweep's space is checked against the config model and the budget (every choice, both bounds of a range).
    ("POST", "/sweeps"),
    # The inference protocols check their tensor's shape against the served policy's obs_dim as /act does, and answer
    # a mismatch with a 400 in their own error shape (KServe's): a schema-valid body of the wrong width is refused.
    ("POST", "/v1/models/{name}:predict"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
}
EVENTS = "/jobs/{job_id}/events"
# How long one request may take; for an event stream, how long it is read before it is cut short (schemathesis's
# `request-timeout`, counted from when the response starts). No worker runs here, so the stream of a queued or
# running job would stay open for ever: its events so far are validated, then the client leaves.
REQUEST_SECONDS = 30.0
STREAM_SECONDS = 2.0
WORKER = "fuzz-worker"


@dataclass(frozen=True)
class FuzzedServer:
    api: Api
    finished_job: int
    running_job: int


def _write_jobs(database_url: str) -> tuple[int, int]:
    """A finished job (4 episodes, 2 evaluations, its policy) and a running one (2 episodes), as a worker writes."""
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        ids = []
        for episodes, finish in ((4, True), (2, False)):
            with sessions() as session:
                job = enqueue_job(session, config={"preset": "default"}, promote="never", max_queued=10)
                claimed = claim_next_job(session, worker_id=WORKER, lease_seconds=3600)
                assert claimed is not None and claimed.id == job.id
                for episode in range(episodes):
                    record_episode(
                        session,
                        job.id,
                        worker_id=WORKER,
                        lease_seconds=3600,
                        episode=episode,
                        episode_return=-1200.0 + 100 * episode,
                        avg_return_10=-1200.0 + 50 * episode,
                        env_steps=200 * (episode + 1),
                        wall_time=0.5 * (episode + 1),
                    )
                    if episode % 2:
                        record_evaluation(
                            session,
                            job.id,
                            worker_id=WORKER,
                            episode=episode,
                            env_steps=200 * (episode + 1),
                            mean_return=-400.0 + episode,
                            std_return=20.0,
                            wall_time=0.5 * (episode + 1),
                        )
                if finish:
                    complete_job(session, job.id, worker_id=WORKER, weights=make_policy_bytes(3))
                ids.append(job.id)
        return ids[0], ids[1]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedServer]:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    group = Processes(tmp_path)
    policy = tmp_path / "actor.safetensors"
    policy.write_bytes(make_policy_bytes(7))
    database_url = f"sqlite:///{tmp_path / 'fuzz.sqlite3'}"
    try:
        api = group.api(
            database_url,
            POLICY_FILE=str(policy),
            API_KEY=API_KEY,
            # So that /act and the inference routes declare a key too, and ignored_auth checks they enforce it.
            ACT_API_KEY=API_KEY,
            MAX_QUEUED_JOBS="3",
            MAX_BATCH="64",
            MAX_BODY_BYTES="65536",
        )
        # Written once the server has migrated the database, before any fuzzing: ids 1 and 2.
        finished_job, running_job = _write_jobs(database_url)
        yield FuzzedServer(api, finished_job, running_job)
    finally:
        group.stop_all()


# What counts as refusing a schema-violating request: schemathesis's default list, and 413 (a schema-violating body
# can also be larger than MAX_BODY_BYTES, which the server refuses before reading it).
NEGATIVE_DATA_REJECTION_STATUSES = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]  # fmt: skip


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES},
            "checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE_DATA_REJECTION_STATUSES}},
            "request-timeout": REQUEST_SECONDS,
            "operations": [{"include-path": EVENTS, "request-timeout": STREAM_SECONDS}],
        }
    )


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: FuzzedServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_server.api.base_url}/openapi.json", config=_config())


def _validate(case: Case[Any], server: Api, headers: dict[str, str]) -> None:
    excluded: list[CheckFunction] = (
        [positive_data_acceptance] if (case.method.upper(), case.path) in RUNTIME_VALIDATED else []
    )
    try:
        case.call_and_validate(base_url=server.base_url, headers=headers, checks=CHECKS, excluded_checks=excluded)
    except Exception:
        if not server.alive():
            pytest.fail(f"the server died\n{server.log()}")
        raise


def _nothing_to_negate(operation: APIOperation[Any, Any, Any, Any]) -> bool:
    """No schema-violating request of this operation exists: no body, no query, header or cookie parameter, and
    path parameters that take any string (`GET /v2/models/{name}`). schemathesis's negative strategy then draws
    valid path parameters and rejects every case, and Hypothesis gives up (Unsatisfiable) only after about 460
    rejected draws: a CPU second per operation, for no request sent. `can_negate_path_parameters` is the test that
    schemathesis's generator itself applies, so an operation whose path parameters it can break is still fuzzed."""
    return not (operation.body or operation.query or operation.headers or operation.cookies) and (
        not can_negate_path_parameters(operation)
    )


def _fuzz(
    schema: schemathesis.BaseSchema, server: Api, headers: dict[str, str], *, mutating_only: bool = False
) -> None:
    """Every operation, schema-valid then schema-violating requests; each failure names its operation."""
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    if mutating_only:
        operations = [op for op in operations if op.method.upper() != "GET"]
    failures: list[str] = []
    for operation in operations:
        # The decorators and body of `check` below stay as they are: with `derandomize`, Hypothesis seeds the
        # examples from that source, so editing it draws other requests.
        modes = [GenerationMode.POSITIVE]
        if not _nothing_to_negate(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @hypothesis.settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,  # reproducible in CI
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Case[Any]) -> None:
                _validate(case, server, headers)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                # No parameters and no body (e.g. GET /healthz): there is nothing to make schema-violating.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value} data): {exc}")
    assert not failures, "\n\n".join(failures)


def test_every_endpoint_with_the_api_key(api_schema: schemathesis.BaseSchema, fuzzed_server: FuzzedServer) -> None:
    _fuzz(api_schema, fuzzed_server.api, {"Authorization": f"Bearer {API_KEY}"})


def test_every_endpoint_without_credentials(api_schema: schemathesis.BaseSchema, fuzzed_server: FuzzedServer) -> None:
    # The reads are open and were fuzzed above; here the writes must all be refused in a documented way.
    _fuzz(api_schema, fuzzed_server.api, {}, mutating_only=True)


def _events_of(response: Any) -> list[str]:
    return [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]


def test_event_streams_conform_to_their_documented_events(
    api_schema: schemathesis.BaseSchema, fuzzed_server: FuzzedServer
) -> None:
    """Streams the fuzz may not happen upon: each event checked against the documented event models."""
    operation = api_schema[EVENTS]["GET"]
    server = fuzzed_server.api
    finished, running = fuzzed_server.finished_job, fuzzed_server.running_job
    history = ["episode", "episode", "evaluation", "episode", "episode", "evaluation"]
    for job_id, last_event_id, expected, ends in [
        (finished, None, [*history, "status"], True),
        (finished, "3", [*history[3:], "status"], True),
        # Open for as long as the job runs: read for STREAM_SECONDS, then left.
        (running, None, history[:3], False),
    ]:
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        case = operation.Case(path_parameters={"job_id": job_id}, headers=headers)
        response = case.call_and_validate(base_url=server.base_url, checks=CHECKS)
        assert response.status_code == 200
        assert _events_of(response) == expected, (job_id, last_event_id)
        assert response.stream_cut_short is not ends


def _events_as_strings(spec: dict[str, Any]) -> None:
    """What the document said before its events were described: each event "a string"."""
    content = spec["paths"][EVENTS]["get"]["responses"]["200"]["content"]["text/event-stream"]
    content.clear()
    content["schema"] = {"type": "string"}


def _episode_payload_changed(spec: dict[str, Any]) -> None:
    """A payload model that no longer matches what is sent."""
    spec["components"]["schemas"]["EpisodeOut"]["required"].append("missing_field")


@pytest.mark.parametrize(
    ("misdescribe", "reason"),
    [
        (_events_as_strings, 'is not of type "string"'),
        # The episode events' data no longer match their contentSchema, so they match no branch of the oneOf.
        (_episode_payload_changed, "is not valid under any of the schemas listed in the 'oneOf' keyword"),
    ],
)
def test_the_checks_catch_a_stream_that_does_not_match_its_document(
    fuzzed_server: FuzzedServer, misdescribe: Callable[[dict[str, Any]], None], reason: str
) -> None:
    """The SSE checks are really on: the same finished stream fails against a document that misdescribes it."""
    server = fuzzed_server.api
    spec = httpx.get(f"{server.base_url}/openapi.json", timeout=REQUEST_SECONDS).json()
    misdescribe(spec)
    schema = schemathesis.openapi.from_dict(spec, config=_config())
    case = schema[EVENTS]["GET"].Case(path_parameters={"job_id": fuzzed_server.finished_job})
    with pytest.raises(FailureGroup) as raised:
        case.call_and_validate(base_url=server.base_url, checks=[response_schema_conformance])
    [found] = raised.value.exceptions
    # The failure an independent schemathesis run reported for this endpoint while its events were "strings".
    assert found.title == "SSE event violates schema"
    assert found.message.startswith("Event #0: ") and reason in found.message


@pytest.mark.parametrize(
    ("query", "headers", "code", "field"),
    [
        ("", {}, "unauthorized", None),
        (f"?model={'m' * 65}", {"Authorization": f"Bearer {API_KEY}"}, "validation_error", "model"),
        ("?model=boat", {"Authorization": f"Bearer {API_KEY}"}, "not_found", "model"),
    ],
)
def test_a_refused_stream_is_told_why_and_closed_with_1008(
    fuzzed_server: FuzzedServer, query: str, headers: dict[str, str], code: str, field: str | None
) -> None:
    """Over real uvicorn, not an HTTP 403 at the handshake (what a close before accepting becomes): the documented
    close code, after the error body."""
    url = fuzzed_server.api.base_url.replace("http://", "ws://") + "/act/stream" + query
    with connect(url, additional_headers=headers, open_timeout=REQUEST_SECONDS) as stream:
        error = orjson.loads(stream.recv(timeout=REQUEST_SECONDS))["error"]
        assert error["code"] == code and (field is None or error["details"][0]["field"] == field), error
        with pytest.raises(ConnectionClosed) as closed:
            stream.recv(timeout=REQUEST_SECONDS)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
