"""Faults with real processes: a worker SIGKILLed mid-job, the API SIGKILLed and restarted while jobs run,
the database gone at start-up and at run time (a TCP proxy in front of PostgreSQL is stopped and started),
and a burst of concurrent POST /train against the queue limit on a 2-worker uvicorn.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.app.factories import assert_error_shape
from tests.reliability.conftest import LONG_JOB, TINY_JOB, Api, Processes, TcpProxy, wait_for

pytestmark = pytest.mark.slow


def _job(api: Api, job_id: int) -> dict[str, Any]:
    response = httpx.get(f"{api.base_url}/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _episodes(api: Api, job_id: int) -> list[dict[str, Any]]:
    response = httpx.get(f"{api.base_url}/jobs/{job_id}/rewards", timeout=10)
    assert response.status_code == 200, response.text
    episodes: list[dict[str, Any]] = response.json()["episodes"]
    return episodes


def _train(api: Api, body: dict[str, Any]) -> int:
    response = httpx.post(f"{api.base_url}/train", json=body, timeout=10)
    assert response.status_code == 202, response.text
    job_id: int = response.json()["id"]
    return job_id


def test_sigkilled_worker_job_fails_with_reason_via_the_api_and_the_next_job_runs(
    processes: Processes, sqlite_url: str, policy_file: Any
) -> None:
    # tests/worker covers the lease expiry on both databases through the store; this is the HTTP view of it.
    any_database_url = sqlite_url
    # No other worker is alive when the victim dies: the API's own lease sweep must end its job.
    api = processes.api(any_database_url, POLICY_FILE=str(policy_file), LEASE_EXPIRY_CHECK_SECONDS="1")
    doomed = _train(api, LONG_JOB)
    following = _train(api, TINY_JOB)
    victim = processes.worker(any_database_url, "--worker-id=victim", "--lease-seconds=3")
    wait_for(
        lambda: _job(api, doomed)["progress"]["episodes_done"] >= 2, "2 episodes of the long job", logs=processes.logs
    )
    victim.kill()
    recorded = _episodes(api, doomed)
    assert _job(api, doomed)["status"] == "running"  # nobody has noticed yet

    wait_for(
        lambda: _job(api, doomed)["status"] != "running", "the API to fail the dead worker's job", logs=processes.logs
    )
    dead = _job(api, doomed)
    assert dead["status"] == "failed", dead
    assert dead["error"].startswith("worker victim stopped heartbeating (lease expired at "), dead
    assert _episodes(api, doomed) == recorded  # the history written before the kill is all there, unchanged
    assert [row["episode"] for row in recorded] == list(range(len(recorded))) and len(recorded) >= 2
    assert _job(api, following)["status"] == "queued"

    survivor = processes.worker(any_database_url, "--worker-id=survivor", "--lease-seconds=3")
    wait_for(lambda: _job(api, following)["status"] == "succeeded", "the next job to succeed", logs=processes.logs)
    assert len(_episodes(api, following)) == TINY_JOB["episodes"]
    assert survivor.terminate() == 0, survivor.log()


def _snapshot(api: Api) -> dict[str, Any]:
    with api.client() as client:
        jobs = client.get("/jobs", params={"limit": 500}).json()["items"]
        policies = client.get("/policies", params={"limit": 500}).json()["items"]
        rewards = {job["id"]: client.get(f"/jobs/{job['id']}/rewards").json()["episodes"] for job in jobs}
        act = client.post("/act", json={"observation": [0.3, -0.2, 0.9]}).json()
    return {"jobs": {job["id"]: job for job in jobs}, "policies": policies, "rewards": rewards, "act": act}


EPISODES = 8


def test_api_sigkilled_and_restarted_while_jobs_run_loses_nothing(
    processes: Processes, sqlite_url: str, policy_file: Any
) -> None:
    api = processes.api(sqlite_url, POLICY_FILE=str(policy_file))
    job_ids = [_train(api, {**TINY_JOB, "seed": seed, "episodes": EPISODES}) for seed in range(2)]
    processes.worker(sqlite_url, "--worker-id=w1")
    wait_for(
        lambda: sum(len(_episodes(api, job_id)) for job_id in job_ids) >= 3,
        "jobs to make progress",
        logs=processes.logs,
    )
    before = _snapshot(api)
    api.kill()

    # The worker goes on without the API; then the API comes back on the same port and database.
    port = int(api.base_url.rsplit(":", 1)[1])
    wait_for(lambda: _worker_progressed(sqlite_url, before), "the worker to go on alone", logs=processes.logs)
    restarted = processes.api(sqlite_url, POLICY_FILE=str(policy_file), port=port)
    after = _snapshot(restarted)

    assert set(after["jobs"]) == set(before["jobs"]) == set(job_ids)  # no job lost, none duplicated
    for job_id, job in before["jobs"].items():
        assert (
            after["jobs"][job_id]["config"] == job["config"]
            and after["jobs"][job_id]["created_at"] == job["created_at"]
        )
        # The reward history only grows: what was there before the kill is a prefix of what is there now.
        assert after["rewards"][job_id][: len(before["rewards"][job_id])] == before["rewards"][job_id]
    assert all(policy in after["policies"] for policy in before["policies"])  # ids, hashes, metadata unchanged
    # Same default policy (the jobs never promote), and the same action for the same observation.
    assert after["act"] == before["act"]

    wait_for(
        lambda: all(_job(restarted, job_id)["status"] == "succeeded" for job_id in job_ids),
        "every job to succeed after the restart",
        logs=processes.logs,
    )
    final = _snapshot(restarted)
    for job_id in job_ids:
        assert [row["episode"] for row in final["rewards"][job_id]] == list(range(EPISODES))
    assert {p["source_job_id"] for p in final["policies"]} >= set(job_ids)
    assert final["act"] == before["act"]


def _worker_progressed(database_url: str, before: dict[str, Any]) -> bool:
    """More episodes in the database than the snapshot saw (read directly: the API is down)."""
    from store.db import create_db_engine, make_session_factory
    from store.jobs import episode_history

    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            now = sum(len(episode_history(session, job_id)) for job_id in before["jobs"])
    finally:
        engine.dispose()
    return now > sum(len(rows) for rows in before["rewards"].values())


OUTAGE_JOB_EPISODES = 12


def test_database_down_at_start_and_at_run_time_then_back(
    processes: Processes, postgres_proxy: tuple[TcpProxy, str], policy_file: Any
) -> None:
    proxy, url = postgres_proxy
    # Down at start-up: the API starts anyway, alive but not ready; the worker waits with backoff.
    api = processes.api(url, ready="/healthz", POLICY_FILE=str(policy_file))
    worker = processes.worker(url, "--worker-id=w1", "--lease-seconds=30")
    ready = httpx.get(f"{api.base_url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.headers["retry-after"]
    assert_error_shape(ready.json(), "not_ready")
    jobs = httpx.get(f"{api.base_url}/jobs", timeout=10)
    assert jobs.status_code == 503
    assert_error_shape(jobs.json())
    wait_for(lambda: "retrying in" in worker.log_path.read_text(), "the worker to retry", logs=processes.logs)

    proxy.start()
    wait_for(lambda: httpx.get(f"{api.base_url}/readyz", timeout=10).status_code == 200, "ready", logs=processes.logs)
    # Long enough to be running when the database goes: the test cuts it as soon as the first episode is written,
    # and every write after that waits the outage out, so the job cannot end during it whatever its length.
    job_id = _train(api, {**LONG_JOB, "episodes": OUTAGE_JOB_EPISODES})
    wait_for(lambda: _job(api, job_id)["progress"]["episodes_done"] >= 1, "the job to start", logs=processes.logs)

    # Down at run time: connections cut, new ones refused.
    proxy.stop()
    wait_for(
        lambda: httpx.get(f"{api.base_url}/readyz", timeout=10).status_code == 503, "not ready", logs=processes.logs
    )
    response = httpx.get(f"{api.base_url}/jobs/{job_id}", timeout=10)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "psycopg" not in response.text and "5432" not in response.text
    assert_error_shape(response.json(), "database_unavailable")
    # /act keeps serving the loaded policy from memory.
    act = httpx.post(f"{api.base_url}/act", json={"observation": [0.0, 1.0, 0.0]}, timeout=10)
    assert act.status_code == 200, act.text
    log_mark = len(worker.log_path.read_text())
    wait_for(
        lambda: (
            "database unavailable" in worker.log_path.read_text()[log_mark:]
            or "heartbeat failed" in worker.log_path.read_text()[log_mark:]
        ),
        "the worker to notice the outage",
        logs=processes.logs,
    )
    assert api.alive() and worker.alive()

    # Back: both recover by themselves, and the job finishes.
    proxy.start()
    wait_for(
        lambda: httpx.get(f"{api.base_url}/readyz", timeout=10).status_code == 200, "ready again", logs=processes.logs
    )
    wait_for(
        lambda: _job(api, job_id)["status"] == "succeeded", "the job to succeed", deadline=180, logs=processes.logs
    )
    episodes = _episodes(api, job_id)
    # No episode lost or written twice.
    assert [row["episode"] for row in episodes] == list(range(OUTAGE_JOB_EPISODES))
    assert api.alive() and worker.alive()


@pytest.mark.parametrize("requests", [48])
def test_concurrent_train_requests_queue_exactly_the_limit(
    processes: Processes, any_database_url: str, policy_file: Any, requests: int
) -> None:
    limit = 5
    api = processes.api(any_database_url, POLICY_FILE=str(policy_file), WORKERS="2", MAX_QUEUED_JOBS=str(limit))
    barrier = threading.Barrier(requests)
    statuses: list[int] = []
    created: list[int] = []
    lock = threading.Lock()

    def submit(seed: int) -> None:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            barrier.wait()
            response = client.post("/train", json={**TINY_JOB, "seed": seed})
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 202:
                created.append(response.json()["id"])
            else:
                assert response.status_code == 429, response.text
                assert_error_shape(response.json(), "queue_full")
                assert int(response.headers["retry-after"]) > 0

    threads = [threading.Thread(target=submit, args=(seed,)) for seed in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [202] * limit + [429] * (requests - limit), statuses
    listed = httpx.get(f"{api.base_url}/jobs", params={"limit": 500}, timeout=10).json()
    assert listed["total"] == limit
    assert sorted(job["id"] for job in listed["items"]) == sorted(created)
    assert len({job["config"]["seed"] for job in listed["items"]}) == limit  # five different requests, no duplicate
    assert all(job["status"] == "queued" for job in listed["items"])
