"""`python -m app`'s embedded children as real processes: a trainer worker killed with SIGKILL is started again,
`/readyz` says it is down meanwhile, and Ctrl-C then stops everything with one INFO line per child."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Processes, wait_for

pytestmark = pytest.mark.slow


def test_a_killed_embedded_worker_is_restarted_and_readyz_shows_it_down_meanwhile(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(sqlite_url, EMBEDDED_WORKER="true", POLICY_FILE=str(policy_file))
    seen: list[dict[str, Any]] = []

    def worker() -> dict[str, Any]:
        ready = httpx.get(f"{api.base_url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # a child down never makes the API unready: /act is served
        state: dict[str, Any] = ready.json()["embedded"]["trainer_worker"]
        seen.append(state)
        return state

    first = worker()
    assert (first["state"], first["restarts"], first["exit_code"]) == ("running", 0, None)
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: worker()["state"] == "restarting", "/readyz to show the worker down", logs=processes.logs)
    assert seen[-1]["exit_code"] == -signal.SIGKILL
    wait_for(lambda: worker()["restarts"] == 1, "the worker to be restarted", logs=processes.logs)
    again = worker()
    assert again["state"] == "running" and again["pid"] != first["pid"]
    assert "embedded trainer worker exited with code -9; restarting it in 1 s" in api.log_path.read_text()

    os.kill(api.process.pid, signal.SIGINT)
    assert api.process.wait(60) == 0, processes.logs()
    log = api.log_path.read_text()
    # 0, or -15 when the restarted worker was still importing torch, before its handler was set: both as asked.
    stopped = re.findall(r"(\w+) app.infra.supervisor: embedded trainer worker stopped \(exit code (-?\d+)\)", log)
    assert len(stopped) == 1 and stopped[0] in {("INFO", "0"), ("INFO", "-15")}, log[-3000:]
