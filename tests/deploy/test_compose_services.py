"""Run every docker-compose service's command, with its environment from the file, as local processes.

No Docker engine runs on these machines, so this is how the compose file is proven: `migrate`, `api`
and two `trainer` workers start from exactly what docker-compose.yml says, against a fresh PostgreSQL
database on this machine standing in for the `db` service. Then a job is trained through the API.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.grpc_oip.generated import grpc_predict_v2_pb2 as pb
from app.grpc_oip.generated.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from tests.deploy.compose import ROOT, load_compose
from tests.processes import START_TIME_PREFIXES, ChildProcess, start_process

pytestmark = pytest.mark.slow

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    if not TEST_DATABASE_URL.startswith("postgresql"):
        pytest.skip("TEST_DATABASE_URL does not point at PostgreSQL (.ci/run sets it)")
    name = f"compose_{uuid.uuid4().hex[:10]}"
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_process(
    service: dict[str, Any], database_url: str, data_dir: Path, log: Path, **overrides: str
) -> ChildProcess:
    """Start a compose service's command locally: its environment, with the `db` host swapped for ours."""
    command = list(service["command"])
    assert command[0] == "python", "compose commands run the image's python"
    # `KEY: ${VAR:-}` reads as YAML null without docker-compose's own interpolation: compose passes "".
    environment = {key: "" if value is None else str(value) for key, value in service["environment"].items()}
    assert "@db:5432/" in environment["DATABASE_URL"], "services reach PostgreSQL as the `db` service"
    environment.update(DATABASE_URL=database_url, DATA_DIR=str(data_dir), **overrides)
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    # And this machine's interpreter and library settings (NUMBA_CACHE_DIR...), none of them the service's: with
    # them, the process forks from the runner's preloaded Python (tests/processes.py) instead of importing its
    # libraries again, and so do the API's two uvicorn workers.
    base.update((key, value) for key, value in os.environ.items() if key.startswith(START_TIME_PREFIXES))
    with log.open("wb") as output:
        return start_process(
            [sys.executable, *command[1:]],
            cwd=ROOT,
            env={**base, **environment},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(predicate: Any, timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def _status(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return None


def _finished_job(client: httpx.Client, job_path: str) -> dict[str, Any] | None:
    job: dict[str, Any] = client.get(job_path).json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def test_compose_services_run_as_local_processes(fresh_postgres_url: str, tmp_path: Path) -> None:
    services = load_compose({"API_KEY": "compose-secret"})["services"]
    logs = [tmp_path / f"{name}.log" for name in ("migrate", "api", "trainer-1", "trainer-2")]

    migrate = _service_process(services["migrate"], fresh_postgres_url, tmp_path, logs[0])
    assert migrate.wait(timeout=120) == 0, logs[0].read_text()

    port, grpc_port = _free_port(), _free_port()
    assert services["api"]["environment"]["GRPC_PORT"] == "8001"
    # Two overrides: the ports (8000 and 8001 may be taken on a shared machine), and the bootstrap job is cut to two
    # episodes: it trains beside the test's own job on two cores, and what it proves (queued at start, run by a
    # worker) does not depend on its length.
    api_overrides = {"PORT": str(port), "GRPC_PORT": str(grpc_port), "BOOTSTRAP_EPISODES": "2"}
    processes = [
        _service_process(services["api"], fresh_postgres_url, tmp_path, logs[1], **api_overrides),
        _service_process(services["trainer"], fresh_postgres_url, tmp_path, logs[2]),
        _service_process(services["trainer"], fresh_postgres_url, tmp_path, logs[3]),
    ]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            _wait_for(lambda: _status(client, "/healthz") == 200, 60, "/healthz", logs)

            # Mutations need the key the compose environment configured.
            body = {"preset": "default", "episodes": 3, "seed": 1, "promote": "always"}
            assert client.post("/train", json=body).status_code == 401
            created = client.post("/train", json=body, headers={"Authorization": "Bearer compose-secret"})
            assert created.status_code == 202, created.text
            job_path = created.headers["Location"]

            job = _wait_for(lambda: _finished_job(client, job_path), 240, f"{job_path} to finish", logs)
            assert job["status"] == "succeeded", job
            _wait_for(lambda: _status(client, "/readyz") == 200, 30, "/readyz", logs)

            # Each API worker process picks the promotion up within its policy refresh: ask until it serves the job's.
            acted = _wait_for(
                lambda: (
                    (answer := client.post("/act", json={"observation": [1.0, 0.0, 0.0]})).status_code == 200
                    and answer.json()["policy_id"] == job["policy_id"]
                    and answer
                ),
                30,
                "/act to serve the job's policy",
                logs,
            )
            assert len(acted.json()["action"]) == 1

            # The compose API serves the Open Inference Protocol over gRPC too, with the same action (from either
            # worker process, once both serve the promoted policy).
            def grpc_action() -> list[float] | None:
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    request = pb.ModelInferRequest(model_name="default")
                    observation = request.inputs.add(name="observation", datatype="FP32", shape=[1, 3])
                    observation.contents.fp32_contents.extend([1.0, 0.0, 0.0])
                    try:
                        answer = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)  # type: ignore[no-untyped-call]
                    except grpc.RpcError as error:
                        # A worker process that has not loaded the promoted policy yet says so: wait for it.
                        if error.code() == grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                            return None
                        raise
                return list(answer.outputs[0].contents.fp32_contents)

            _wait_for(
                lambda: grpc_action() == pytest.approx(acted.json()["action"], rel=1e-6),
                30,
                "gRPC to answer /act's action",
                logs,
            )

            rewards = client.get(f"{job_path}/rewards").json()
            assert [row["episode"] for row in rewards["episodes"]] == [0, 1, 2]

            # Both trainer workers are alive and registered work: the bootstrap job and ours ran.
            jobs = client.get("/jobs").json()
            assert jobs["total"] >= 1
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
