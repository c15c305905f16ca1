"""The tests' way of starting the project's processes (tests/processes.py): a process forked from a preloaded Python
must be indistinguishable, to the tests, from one started the usual way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready
from tests.processes import SWITCH_ENV, ForkedProcess, run_process, start_process

TRAINER_HELP = [sys.executable, "-m", "trainer", "worker", "--help"]


def test_a_forked_command_prints_and_exits_as_the_usual_one(tmp_path: Path) -> None:
    forked = run_process(TRAINER_HELP, cwd=tmp_path, timeout=60)
    usual = run_process(TRAINER_HELP, cwd=tmp_path, timeout=60, preloaded=False)
    assert forked.returncode == usual.returncode == 0
    assert forked.stdout == usual.stdout and "usage: python -m trainer worker" in forked.stdout
    refused = run_process([sys.executable, "-m", "trainer", "worker", "--no-such-flag"], cwd=tmp_path, timeout=60)
    assert refused.returncode == 2 and "unrecognized arguments: --no-such-flag" in refused.stderr


forking_is_on = pytest.mark.skipif(os.environ.get(SWITCH_ENV) == "0", reason=f"{SWITCH_ENV}=0: nothing is forked")


@forking_is_on
def test_a_forked_process_has_its_own_group_directory_environment_and_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite3'}", "LOG_LEVEL": "INFO"}
    with (tmp_path / "worker.log").open("wb") as log:
        worker = start_process(
            [sys.executable, "-m", "trainer", "worker", "--poll-interval=0.2"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
    try:
        assert isinstance(worker, ForkedProcess)
        assert os.getpgid(worker.pid) == worker.pid  # a group of its own, there as soon as start_process returns
        assert Path(f"/proc/{worker.pid}/cwd").resolve() == tmp_path.resolve()
        database = tmp_path / "jobs.sqlite3"  # its DATABASE_URL: the worker creates and migrates it at start
        deadline = time.monotonic() + 60
        while not database.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.exists(), (tmp_path / "worker.log").read_text()
        assert worker.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
    assert worker.wait(30) == -signal.SIGKILL
    assert worker.returncode == -signal.SIGKILL


@forking_is_on
def test_a_forked_api_server_serves_without_pytorch_in_its_process(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(tmp_path, PORT=str(port), EMBEDDED_WORKER="false", BOOTSTRAP_JOB="false")
    log_path = tmp_path / "app.log"
    with running([sys.executable, "-m", "app"], env, log_path) as process:
        assert isinstance(process, ForkedProcess)
        wait_until_ready(f"http://127.0.0.1:{port}", process, log_path, path="/healthz")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        mapped = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtorch" not in mapped, "the API's preloaded Python must not have imported PyTorch"
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(45) == 0, log_path.read_text()[-3000:]
