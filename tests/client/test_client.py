"""ddpg_client against the real service (`python -m app` as a subprocess) serving a random-weight POLICY_FILE.

No trainer worker runs, so queued jobs stay queued; that is enough to exercise every client call and every
typed error without training anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from ddpg_client import (
    AsyncPolicyClient,
    AuthError,
    NotFoundError,
    PolicyClient,
    QueueFullError,
    ServiceError,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
    error_from_response,
)
from models.episode_gif import run_episode
from models.policy import NumpyActor
from tests.models.test_episode_gif import random_actor_bytes
from tests.processes import start_process

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"
MAX_QUEUED_JOBS = 2
START_DEADLINE_SECONDS = 90.0


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    actor: NumpyActor | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def run_server(tmp: Path, *, policy: bytes | None) -> Iterator[Server]:
    """Start the service the way users do (`python -m app`, no worker, no bootstrap job); stop it afterwards. No
    learner process or sweep runner either: the client's calls only queue their work, and each would be one more
    process starting beside the server, idle but polling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_KEY", "ACT_API_KEY", "DATABASE_URL"))}
    port = _free_port()
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        DATA_DIR=str(tmp / "data"),
        API_KEY=API_KEY,
        MAX_QUEUED_JOBS=str(MAX_QUEUED_JOBS),
        EMBEDDED_WORKER="false",
        EMBEDDED_LEARNER="false",
        EMBEDDED_SWEEP_RUNNER="false",
        BOOTSTRAP_JOB="false",
        LOG_LEVEL="WARNING",
    )
    actor = None
    if policy is not None:
        policy_file = tmp / "actor.safetensors"
        policy_file.write_bytes(policy)
        env["POLICY_FILE"] = str(policy_file)
        actor = NumpyActor.from_bytes(policy)
    log = tmp / "server.log"
    with log.open("wb") as log_file:
        # The repository is the working directory, so `python -m app` imports this tree's service (no PYTHONPATH:
        # a PYTHONPATH of its own would make tests.processes start it the usual way, not forked).
        process = start_process(
            [sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer within {START_DEADLINE_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield Server(url, log, actor)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("served"), policy=random_actor_bytes(seed=11)) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[PolicyClient]:
    with PolicyClient(server.url, api_key=API_KEY, timeout=10) as c:
        yield c


@pytest.fixture
def anonymous(server: Server) -> Iterator[PolicyClient]:
    with PolicyClient(server.url, timeout=10) as c:
        yield c


def _local_actor(server: Server) -> NumpyActor:
    assert server.actor is not None
    return server.actor


def _cancel_queued(client: PolicyClient) -> None:
    for job in client.jobs(status="queued", limit=100):
        client.cancel(job.id)


# ---- /act -------------------------------------------------------------------------------------------------


def test_act_matches_the_local_numpy_actor(server: Server, anonymous: PolicyClient) -> None:
    observation = [0.6, -0.8, 1.5]
    result = anonymous.act(observation)
    assert len(result.action) == 1
    assert -2.0 <= result.action[0] <= 2.0
    np.testing.assert_allclose(result.action, _local_actor(server).act(observation), rtol=1e-6, atol=1e-6)
    (served,) = [p for p in anonymous.policies() if p.is_default]
    assert result.policy_id == served.id


def test_act_accepts_numpy_and_an_explicit_policy(server: Server, anonymous: PolicyClient) -> None:
    observation = np.array([1.0, 0.0, -3.0], dtype=np.float32)
    default = anonymous.act(observation)
    pinned = anonymous.act(observation, policy_id=default.policy_id)
    assert pinned == default


def test_act_batch_matches_the_local_numpy_actor(server: Server, anonymous: PolicyClient) -> None:
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, size=(7, 3))
    result = anonymous.act_batch(observations)
    assert result.as_array().shape == (7, 1)
    np.testing.assert_allclose(result.as_array(), _local_actor(server).act(observations), rtol=1e-6, atol=1e-6)


def test_wrong_observation_length_is_a_validation_error(anonymous: PolicyClient) -> None:
    with pytest.raises(ValidationError) as caught:
        anonymous.act([1.0, 0.0])
    assert caught.value.status_code == 422
    assert caught.value.code == "validation_error"
    assert "observation" in caught.value.message


def test_unknown_policy_is_not_found(anonymous: PolicyClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        anonymous.act([1.0, 0.0, 0.0], policy_id=987654)
    assert caught.value.status_code == 404


# ---- jobs -------------------------------------------------------------------------------------------------


def test_missing_job_is_not_found(client: PolicyClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.job(987654)
    assert caught.value.code == "not_found"
    with pytest.raises(NotFoundError):
        client.rewards(987654)


def test_train_needs_the_api_key(server: Server, anonymous: PolicyClient) -> None:
    with pytest.raises(AuthError) as caught:
        anonymous.train(episodes=3)
    assert caught.value.status_code == 401
    with PolicyClient(server.url, api_key="wrong-key") as wrong, pytest.raises(AuthError):
        wrong.train(episodes=3)


def test_train_job_rewards_wait_and_cancel(client: PolicyClient) -> None:
    _cancel_queued(client)
    job = client.train(episodes=3, seed=5, hidden_size=32, promote="never")
    assert job.status == "queued"
    assert job.promote == "never"
    assert job.config["episodes"] == 3
    assert client.job(job.id).id == job.id
    assert job.id in [j.id for j in client.jobs()]

    rewards = client.rewards(job.id)
    assert rewards.job_id == job.id
    assert rewards.episodes == [] and rewards.returns == []

    # No worker runs in this test, so the job can only stay queued: wait must give up, not hang.
    with pytest.raises(WaitTimeoutError) as caught:
        client.wait(job.id, timeout=0.3, poll_interval=0.1)
    assert caught.value.job.status == "queued"

    assert client.cancel(job.id).status == "cancelled"
    finished = client.wait(job.id, timeout=5, poll_interval=0.1)
    assert finished.status == "cancelled" and finished.finished


def test_bad_hyperparameters_name_the_field(client: PolicyClient) -> None:
    with pytest.raises(ValidationError) as caught:
        client.train(episodes=0)
    assert any(d.get("field") == "episodes" for d in caught.value.details)
    with pytest.raises(ValidationError) as unknown:
        client.train(no_such_knob=1)
    assert "no_such_knob" in str(unknown.value)


def test_full_queue_is_queue_full_error(client: PolicyClient) -> None:
    _cancel_queued(client)
    queued = [client.train(episodes=2, promote="never") for _ in range(MAX_QUEUED_JOBS)]
    try:
        with pytest.raises(QueueFullError) as caught:
            client.train(episodes=2, promote="never")
        assert caught.value.status_code == 429
        assert caught.value.retry_after is not None and caught.value.retry_after > 0
    finally:
        for job in queued:
            client.cancel(job.id)


# ---- policies ---------------------------------------------------------------------------------------------


def test_policies_and_promote(server: Server, client: PolicyClient, anonymous: PolicyClient) -> None:
    policies = client.policies()
    assert len(policies) == 1
    (policy,) = policies
    assert policy.is_default and policy.env_id == "Pendulum-v1" and policy.obs_dim == 3 and policy.origin == "trained"
    assert client.policy(policy.id) == policy
    assert client.promote(policy.id).id == policy.id
    with pytest.raises(AuthError):
        anonymous.promote(policy.id)
    with pytest.raises(NotFoundError):
        client.promote(987654)
    assert client.ready()


# ---- async client -----------------------------------------------------------------------------------------


def test_async_client(server: Server) -> None:
    async def scenario() -> None:
        async with AsyncPolicyClient(server.url, api_key=API_KEY) as client:
            one, batch = await asyncio.gather(
                client.act([0.0, 1.0, 0.5]), client.act_batch([[0.0, 1.0, 0.5], [1.0, 0.0, -0.5]])
            )
            # Two numeric routes (one observation vs a batch) agree to float32 rounding, not bit for bit.
            assert one.action == pytest.approx(batch.actions[0], abs=1e-5)
            assert batch.policy_id == one.policy_id
            with pytest.raises(ValidationError):
                await client.act([1.0])
            with pytest.raises(NotFoundError):
                await client.job(987654)
            assert [p.id for p in await client.policies()] == [one.policy_id]
            assert await client.ready()
        async with AsyncPolicyClient(server.url, api_key="wrong-key") as wrong:
            with pytest.raises(AuthError):
                await wrong.train(episodes=2)

    asyncio.run(scenario())


# ---- no policy yet ----------------------------------------------------------------------------------------


def test_no_policy_is_unavailable_with_retry_after(tmp_path: Path) -> None:
    with run_server(tmp_path, policy=None) as empty, PolicyClient(empty.url) as client:
        with pytest.raises(UnavailableError) as caught:
            client.act([1.0, 0.0, 0.0])
        assert caught.value.status_code == 503
        assert caught.value.retry_after is not None and caught.value.retry_after > 0
        assert not client.ready()


# ---- lenient error parsing (shapes the service itself never sends: a proxy in between) ----------------------


def test_error_parsing_falls_back_to_raw_text() -> None:
    request = httpx.Request("POST", "http://proxy/act")
    plain = error_from_response(httpx.Response(502, text="Bad Gateway from nginx", request=request))
    assert type(plain) is ServiceError
    assert (plain.status_code, plain.code, plain.message) == (502, "http_502", "Bad Gateway from nginx")
    stock = error_from_response(httpx.Response(404, json={"detail": "Not Found"}, request=request))
    assert isinstance(stock, NotFoundError) and stock.message == "Not Found"
    busy = error_from_response(httpx.Response(503, headers={"Retry-After": "soon"}, request=request))
    assert isinstance(busy, UnavailableError) and busy.retry_after is None


# ---- the rollout command ----------------------------------------------------------------------------------


def test_rollout_cli_prints_the_local_episode_return(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ddpg_client", "rollout", "--url", server.url, "--episodes", "1", "--seed", "3"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout
    episode = re.fullmatch(r"episode 0 seed 3 return (-?\d+\.\d+) steps 200 policy (\d+)", lines[0])
    assert episode, lines[0]
    mean = re.fullmatch(r"mean return (-?\d+\.\d+) over 1 episodes", lines[1])
    assert mean, lines[1]
    # Every action came from the service, computed by the same weights: the return is the local one.
    expected = run_episode(_local_actor(server), "Pendulum-v1", seed=3)
    assert float(episode.group(1)) == pytest.approx(expected, abs=0.006)
    assert float(mean.group(1)) == pytest.approx(expected, abs=0.006)


def test_cli_reports_service_errors(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ddpg_client", "act", "--url", server.url, "1", "0"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "validation_error" in result.stderr
    assert result.stdout == ""
