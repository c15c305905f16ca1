"""`docker-compose up`, for real: both images built from the Dockerfile, the project's docker-compose.yml run on
a Docker engine, and the service checked the way a user would check it, through the API port published on
127.0.0.1 only.

Run by `make test-docker` (deselected from `make test`). Without an engine that answers, it installs Debian's
docker.io and docker-compose and starts a private dockerd (tests/stack/engine.py), stopped at the end. The
tests run in file order against one stack; every container, network, volume and image is removed afterwards,
also when a test fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

from tests.stack.engine import Engine, artifact, docker_engine
from tests.stack.stack import (
    BuiltImage,
    Stack,
    Standins,
    build_image,
    compose_config,
    image_ids,
    images_to_build,
    prepare_standins,
    torch_index,
)

# Generous: the first test's setup installs, builds and may wait for another run on the machine (engine.py).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]

OBSERVATION = {"observation": [1.0, 0.0, 0.0]}
# Bounds on waiting, not timings: the first policy is trained on a 2-core machine next to the API's compile.
FIRST_POLICY_DEADLINE = 600.0
READY_DEADLINE = 300.0
JOB_DEADLINE = 300.0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A CI runner's SIGTERM unwinds like Ctrl-C, so the fixtures still remove what they made."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def docker(figures: dict[str, str]) -> Iterator[Engine]:
    started = time.monotonic()
    # Every poll of the API would be a log line: keep httpx's log to problems.
    httpx_logger = logging.getLogger("httpx")
    level = httpx_logger.level
    httpx_logger.setLevel(logging.WARNING)
    with _sigterm_as_interrupt(), docker_engine() as engine:
        figures["Docker engine"] = f"{engine.description} (answering after {time.monotonic() - started:.0f} s)"
        yield engine
    httpx_logger.setLevel(level)


@pytest.fixture(scope="module")
def standins(docker: Engine, figures: dict[str, str]) -> Standins:
    standins = prepare_standins(docker)
    figures["stand-in base images"] = f"{standins.how} in {standins.seconds:.0f} s"
    return standins


@pytest.fixture(scope="module")
def images(
    docker: Engine, standins: Standins, figures: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BuiltImage]]:
    """The images docker-compose.yml names, built from the Dockerfile: target -> image."""
    before = image_ids(docker)
    try:
        built: dict[str, BuiltImage] = {}
        with torch_index(tmp_path_factory.mktemp("torch-index")) as index_url:
            # Only what this network forces: the stand-in base, and torch from the local index.
            build_args = {"PYTHON_IMAGE": standins.python_image, "TORCH_INDEX_URL": index_url}
            for name, target, context in images_to_build(compose_config({})):
                built[target] = build_image(docker, name, target, context, build_args)
        base = int(docker.run("image", "inspect", "--format", "{{.Size}}", standins.python_image).stdout.strip())
        for target, image in built.items():
            figures[f"build {target} image"] = f"{image.seconds:.0f} s"
        figures["build both images"] = f"{sum(image.seconds for image in built.values()):.0f} s"
        for target, image in built.items():
            figures[f"{target} image size"] = f"{_mb(image.size_bytes)} ({_mb(image.size_bytes - base)} above the base)"
        figures["python base (stand-in) size"] = _mb(base)
        yield built
    finally:
        # A private engine's data root is removed whole; on an existing engine remove each image made here.
        if not docker.own:
            made = image_ids(docker) - before
            if made:
                docker.run("image", "rm", "--force", *sorted(made), check=False)


@pytest.fixture(scope="module")
def stack(
    docker: Engine, standins: Standins, images: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack.create(docker, standins.postgres_image, tmp_path_factory.mktemp("compose"))
    try:
        yield stack
    finally:
        artifact("compose.log").write_text(stack.logs(tail=2000))
        stack.remove_everything()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        yield client


def _act(client: httpx.Client) -> dict[str, Any] | None:
    response = client.post("/act", json=OBSERVATION)
    return dict(response.json()) if response.status_code == 200 else None


def _ready_policy(client: httpx.Client) -> int | None:
    response = client.get("/readyz")
    return int(response.json()["policy_id"]) if response.status_code == 200 else None


def _finished(client: httpx.Client, job_id: int) -> dict[str, Any] | None:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def _all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    page = client.get("/jobs", params={"limit": 500}).json()
    assert page["total"] == len(page["items"])
    return list(page["items"])


def _auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


# --------------------------------------------------------------------------------------------------- tests


def test_up_answers_act_from_a_policy_the_stack_trained(
    stack: Stack, client: httpx.Client, figures: dict[str, str]
) -> None:
    started = time.monotonic()
    stack.compose("up", "-d")
    acted = stack.wait_for("the first /act", lambda: _act(client), FIRST_POLICY_DEADLINE)
    figures["up -d to the first trained /act"] = f"{time.monotonic() - started:.0f} s"
    assert len(acted["action"]) == 1
    assert stack.wait_for("/readyz", lambda: _ready_policy(client), READY_DEADLINE) == acted["policy_id"]

    # The policy came from the bootstrap job the API queued on its own: the only job, and nobody posted one.
    policy = client.get(f"/policies/{acted['policy_id']}").json()
    assert policy["is_default"] and policy["source_job_id"] is not None
    job = client.get(f"/jobs/{policy['source_job_id']}").json()
    assert (job["status"], job["policy_id"]) == ("succeeded", acted["policy_id"])
    assert [j["id"] for j in _all_jobs(client)] == [job["id"]]


def test_images_are_what_the_dockerfile_promises(stack: Stack) -> None:
    def run(service: str, code: str) -> str:
        return stack.compose("exec", "-T", service, "python", "-c", code).stdout.strip()

    # The api image serves without torch; the trainer's torch is the CPU build (no CUDA libraries).
    assert run("api", "import importlib.util; print(importlib.util.find_spec('torch') is None)") == "True"
    assert run("trainer", "import torch; print(torch.__version__)").endswith("+cpu")
    # Both run as the unprivileged user the Dockerfile creates.
    for service in ("api", "trainer"):
        assert run(service, "import os; print(os.getuid())") == "10001"


def test_train_runs_to_succeeded_with_its_reward_history(stack: Stack, client: httpx.Client) -> None:
    body = {"episodes": 5, "seed": 3}
    # The compose environment configured API_KEY: mutations need it.
    assert client.post("/train", json=body).status_code == 401
    created = client.post("/train", json=body, headers=_auth(stack))
    assert created.status_code == 202, created.text
    job_id = int(created.json()["id"])
    assert created.headers["Location"] == f"/jobs/{job_id}"

    job = stack.wait_for(f"job {job_id} to finish", lambda: _finished(client, job_id), JOB_DEADLINE)
    assert job["status"] == "succeeded", job
    assert job["policy_id"] is not None
    rewards = client.get(f"/jobs/{job_id}/rewards").json()
    assert rewards["status"] == "succeeded"
    assert [row["episode"] for row in rewards["episodes"]] == [0, 1, 2, 3, 4]


def test_scaled_trainers_both_run_queued_jobs(stack: Stack, client: httpx.Client) -> None:
    """Queued jobs run on both workers: their worker ids name two different trainer containers.

    Jobs are queued two at a time until both workers have run one: the second worker starts while the first
    is already claiming (no fixed sleep for its start), and once it polls, two jobs queued together go one to
    each (a job lasts seconds; each idle worker polls every second).
    """
    stack.compose("up", "-d", "--scale", "trainer=2")
    trainers = stack.container_ids("trainer")
    assert len(trainers) == 2
    job_ids: list[int] = []
    workers: dict[str, str] = {}
    stop = time.monotonic() + JOB_DEADLINE
    while len(set(workers.values())) < 2:
        assert time.monotonic() < stop, f"after {len(job_ids)} jobs only {workers} ran them\n{stack.logs()}"
        queued: list[int] = []
        for _ in range(2):
            body = {"episodes": 8, "seed": len(job_ids) + len(queued), "promote": "never"}
            created = client.post("/train", json=body, headers=_auth(stack))
            assert created.status_code == 202, created.text
            queued.append(int(created.json()["id"]))
        for job_id in queued:
            job = stack.wait_for(f"job {job_id} to finish", partial(_finished, client, job_id), JOB_DEADLINE)
            assert job["status"] == "succeeded", job
        job_ids += queued
        # Worker ids are `<hostname>-<pid>-<random>`, and a container's hostname is its short id. The API does
        # not show which worker ran a job, so ask the database, through psql in the db container.
        rows = stack.sql(f"SELECT id, worker_id FROM jobs WHERE id IN ({','.join(map(str, job_ids))})")
        workers = {job_id: worker_id for job_id, worker_id in rows}
    assert {worker_id.split("-")[0] for worker_id in workers.values()} == {c[:12] for c in trainers}


def test_killed_api_comes_back_by_its_restart_policy(
    stack: Stack, client: httpx.Client, figures: dict[str, str]
) -> None:
    """The API process dies the way a crash or the OOM killer ends it: SIGKILL, from outside the container.

    Not `docker kill`: Docker takes that for a deliberate stop and suspends the restart policy until the next
    start (docker-kill(1)), so nothing would come back. A process that dies is what `restart:` is for.
    """
    policy = _ready_policy(client)
    assert policy is not None
    (api,) = stack.container_ids("api")
    pid = int(stack.inspect(api, "{{.State.Pid}}"))
    restarts = int(stack.inspect(api, "{{.RestartCount}}"))
    if not Path(f"/proc/{pid}").exists():
        pytest.skip("the engine runs on another machine: its container processes are not visible here")

    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    stack.wait_for("Docker to restart the api", lambda: int(stack.inspect(api, "{{.RestartCount}}")) > restarts, 60)
    assert stack.wait_for("/readyz after the restart", lambda: _ready_policy(client), READY_DEADLINE) == policy
    figures["api killed to ready again"] = f"{time.monotonic() - started:.0f} s"
    acted = _act(client)
    assert acted is not None and acted["policy_id"] == policy
    # Restarted in place by Docker, not replaced.
    assert stack.container_ids("api") == [api]


def test_down_then_up_keeps_every_job_history_and_the_default_policy(
    stack: Stack, client: httpx.Client, figures: dict[str, str]
) -> None:
    jobs = _all_jobs(client)
    histories = {job["id"]: client.get(f"/jobs/{job['id']}/rewards").json() for job in jobs}
    default = _ready_policy(client)
    assert default is not None
    default_policy = client.get(f"/policies/{default}").json()

    stack.compose("down")
    left = stack.project_resources()
    assert left["containers"] == [] and f"{stack.project}_pgdata" in left["volumes"], left

    started = time.monotonic()
    stack.compose("up", "-d")
    assert stack.wait_for("/readyz after up", lambda: _ready_policy(client), READY_DEADLINE) == default
    figures["down, then up -d to ready"] = f"{time.monotonic() - started:.0f} s"
    assert _all_jobs(client) == jobs
    assert {job["id"]: client.get(f"/jobs/{job['id']}/rewards").json() for job in jobs} == histories
    assert client.get(f"/policies/{default}").json() == default_policy
    acted = _act(client)
    assert acted is not None and acted["policy_id"] == default


def test_down_v_removes_them(stack: Stack) -> None:
    stack.compose("down", "-v")
    assert stack.project_resources() == {"containers": [], "volumes": [], "networks": []}
