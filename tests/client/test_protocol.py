"""ddpg_client without a server: the sans-IO calls driven by hand, and both clients over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ddpg_client import (
    ActResult,
    AsyncPolicyClient,
    Job,
    NotFoundError,
    PolicyClient,
    WaitTimeoutError,
    protocol,
)
from ddpg_client.clients import ServiceCalls, endpoint
from ddpg_client.protocol import Request, Sleep

REPO_ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[httpx.Request], httpx.Response]


def job_json(job_id: int, status: str) -> dict[str, Any]:
    return {"id": job_id, "status": status, "promote": "never", "config": {}, "progress": {}}


def answer(request: Request | Sleep, status: int, body: Any) -> httpx.Response:
    assert isinstance(request, Request), request
    return httpx.Response(status, json=body, request=httpx.Request(request.method, f"http://test{request.path}"))


def test_an_operation_yields_its_request_and_parses_the_answer() -> None:
    operation = protocol.act([1.0, 0.0, 0.5], policy_id=3)
    request = next(operation)
    assert request == Request("POST", "/act", json={"observation": [1.0, 0.0, 0.5], "policy_id": 3})
    with pytest.raises(StopIteration) as finished:
        operation.send(answer(request, 200, {"action": [-0.25], "policy_id": 3}))
    assert finished.value.value == ActResult(action=[-0.25], policy_id=3)


def test_an_error_answer_raises_the_typed_error() -> None:
    operation = protocol.job(7)
    request = next(operation)
    assert request == Request("GET", "/jobs/7")
    error = {"error": {"code": "not_found", "message": "no job 7", "details": []}}
    with pytest.raises(NotFoundError, match="no job 7"):
        operation.send(answer(request, 404, error))


def test_train_leaves_unset_fields_out_and_jobs_pages() -> None:
    request = next(protocol.train(preset="seed", episodes=5, seed=None, promote="never"))
    assert request == Request("POST", "/train", json={"episodes": 5, "preset": "seed", "promote": "never"})
    request = next(protocol.jobs(status="queued", limit=5))
    assert request == Request("GET", "/jobs", params={"limit": 5, "offset": 0, "status": "queued"})


def test_wait_polls_with_sleeps_until_the_job_finishes() -> None:
    operation = protocol.wait(4, timeout=60, poll_interval=0.5)
    effects: list[Request | Sleep] = [next(operation)]
    statuses = iter(["queued", "running", "succeeded"])
    with pytest.raises(StopIteration) as finished:
        while True:
            effect = effects[-1]
            response = answer(effect, 200, job_json(4, next(statuses))) if isinstance(effect, Request) else None
            effects.append(operation.send(response))
    assert effects == [Request("GET", "/jobs/4"), Sleep(0.5)] * 2 + [Request("GET", "/jobs/4")]
    assert isinstance(finished.value.value, Job) and finished.value.value.status == "succeeded"


def test_wait_gives_up_after_its_timeout() -> None:
    operation = protocol.wait(4, timeout=0, poll_interval=0.5)
    request = next(operation)
    with pytest.raises(WaitTimeoutError) as caught:
        operation.send(answer(request, 200, job_json(4, "running")))
    assert caught.value.job.status == "running"


def routes(seen: list[httpx.Request]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/readyz":
            return httpx.Response(503, json={"error": {"code": "no_policy", "message": "no policy yet"}})
        if request.url.path == "/act":
            body = json.loads(request.content)
            return httpx.Response(200, json={"action": [sum(body["observation"])], "policy_id": 1})
        return httpx.Response(200, json=job_json(int(request.url.path.rsplit("/", 1)[-1]), "succeeded"))

    return handle


def test_sync_and_async_clients_send_the_same_requests() -> None:
    sync_seen: list[httpx.Request] = []
    with PolicyClient("http://svc", api_key="k", transport=httpx.MockTransport(routes(sync_seen))) as client:
        sync_results = (client.act([1.0, 2.0]), client.wait(9, timeout=1), client.ready())

    async_seen: list[httpx.Request] = []

    async def scenario() -> tuple[ActResult, Job, bool]:
        transport = httpx.MockTransport(routes(async_seen))
        async with AsyncPolicyClient("http://svc", api_key="k", transport=transport) as client:
            return await client.act([1.0, 2.0]), await client.wait(9, timeout=1), await client.ready()

    async_results = asyncio.run(scenario())
    assert sync_results == async_results
    assert sync_results[0].action == [3.0] and sync_results[2] is False
    assert [(r.method, str(r.url), r.content) for r in sync_seen] == [
        (r.method, str(r.url), r.content) for r in async_seen
    ]
    assert {r.headers["authorization"] for r in sync_seen + async_seen} == {"Bearer k"}


def test_ready_is_false_on_503_and_raises_on_other_errors() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    with PolicyClient("http://svc", transport=httpx.MockTransport(broken)) as client, pytest.raises(NotFoundError):
        client.ready()
    operation = protocol.ready()
    request = next(operation)
    with pytest.raises(StopIteration) as finished:
        operation.send(answer(request, 503, {"error": {"code": "no_policy", "message": "no policy yet"}}))
    assert finished.value.value is False


def test_every_call_is_declared_once_for_both_clients() -> None:
    calls = {name for name, value in vars(ServiceCalls).items() if isinstance(value, endpoint)}
    assert calls == {
        "act", "act_batch", "train", "job", "jobs", "cancel", "wait", "rewards", "policies", "policy", "promote",
        "ready", "learner",
    }  # fmt: skip
    assert not calls & set(vars(PolicyClient)) and not calls & set(vars(AsyncPolicyClient))
    client = PolicyClient("http://svc")
    try:
        assert client.act is client.act  # bound once per client
        assert "policy_id" in inspect.signature(client.act).parameters
        assert client.act.__doc__ == protocol.act.__doc__
    finally:
        client.close()


def test_importing_the_client_loads_none_of_the_service() -> None:
    script = (
        "import sys, ddpg_client\n"
        "banned = ('app', 'trainer', 'models', 'store', 'gymnasium', 'torch', 'pydantic', 'fastapi')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_learner_gets_the_models_learner_with_its_name_escaped() -> None:
    operation = protocol.learner("my arm/1")
    request = next(operation)
    assert (request.method, request.path) == ("GET", "/models/my%20arm%2F1/learner")
    with pytest.raises(StopIteration) as finished:
        operation.send(answer(request, 200, {"status": "running", "unlearned_transitions": 7}))
    assert finished.value.value == {"status": "running", "unlearned_transitions": 7}
