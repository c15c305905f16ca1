"""`python -m app`: fail-fast settings, the bootstrap job, and a clean stop (no trainer worker here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app.factories import free_port
from tests.app.servers import REPO, running, server_env, wait_until_ready
from tests.processes import run_process


def run_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_process([sys.executable, "-m", "app"], cwd=REPO, env=env, timeout=60)


def test_bad_settings_stop_start_up_with_a_message(tmp_path: Path) -> None:
    result = run_app(server_env(tmp_path, PORT="99999", EMBEDDED_WORKER="false"))
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bootstrap_job_is_queued_once_and_the_service_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(tmp_path, PORT=str(port), EMBEDDED_WORKER="false", BOOTSTRAP_JOB="true", BOOTSTRAP_EPISODES="7")
    for attempt in range(2):  # the second start finds the job already queued
        log_path = tmp_path / f"app-{attempt}.log"
        with running([sys.executable, "-m", "app"], env, log_path) as process:
            wait_until_ready(base_url, process, log_path, path="/healthz")
            jobs = httpx.get(f"{base_url}/jobs").json()
            assert jobs["total"] == 1, jobs
            assert jobs["items"][0]["config"] == {"preset": "default", "episodes": 7}
            assert httpx.get(f"{base_url}/readyz").status_code == 503  # no policy until the job runs
            os.kill(process.pid, signal.SIGINT)
            assert process.wait(30) == 0, log_path.read_text()[-3000:]
        assert "Traceback" not in log_path.read_text()
