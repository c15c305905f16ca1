"""`make run` runs sweeps too: `python -m app` starts the sweep runner, which starts a local Ray for a sweep."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready

pytestmark = pytest.mark.slow

TINY = {"episodes": 2, "max_episode_steps": 50, "eval_episodes": 1, "hidden_size": 16, "batch_size": 32,
        "learning_starts": 32, "random_steps": 32}  # fmt: skip
DEADLINE = 240.0


def _processes_with(marker: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_the_one_command_run_runs_a_sweep_on_a_local_ray_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # HOME of its own: a local Ray keeps its auth token under ~/.ray, which must not outlive the test.
    home = tmp_path / "home"
    home.mkdir()
    env = server_env(
        tmp_path, PORT=str(port), EMBEDDED_WORKER="false", EMBEDDED_SWEEP_RUNNER="true", BOOTSTRAP_JOB="false",
        HOME=str(home),
    )  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path / "app.log"
    with running([sys.executable, "-m", "app"], env, log_path) as process:
        wait_until_ready(base_url, process, log_path, path="/healthz")
        body = {
            "base": TINY, "space": {"seed": {"choice": [1, 2]}}, "search": "grid", "trials": 2, "max_concurrent": 1,
            "max_failures": 2,  # a trial's process that a loaded machine starves may be retried, as Tune would
        }  # fmt: skip
        created = httpx.post(f"{base_url}/sweeps", json=body)
        assert created.status_code == 202, created.text
        sweep_url = base_url + created.headers["location"]
        end = time.monotonic() + DEADLINE
        sweep = httpx.get(sweep_url).json()
        while sweep["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < end:
            time.sleep(0.2)
            sweep = httpx.get(sweep_url).json()
        errors = [sweep["error"], *(trial["error"] for trial in sweep["trials"])]
        assert sweep["status"] == "succeeded", (errors, log_path.read_text()[-6000:])
        assert [trial["status"] for trial in sweep["trials"]] == ["succeeded", "succeeded"]
        assert httpx.get(f"{base_url}/readyz").status_code in (200, 503)  # the API itself kept serving
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(60) == 0, log_path.read_text()[-3000:]
    # The runner shut its local Ray down with it: nothing started under this HOME is left.
    deadline = time.monotonic() + 30
    while _processes_with(f"HOME={home}".encode()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(f"HOME={home}".encode()) == []
