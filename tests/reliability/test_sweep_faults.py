"""The embedded sweep runner under database faults (PostgreSQL behind the test proxy): a 3 s cut mid-sweep and a lost
COMMIT reply of a trial's write cost neither the sweep nor the runner; the next sweep runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Api, Processes, wait_for
from tests.reliability.db_proxy import DbProxy

pytestmark = pytest.mark.slow

TINY = {"max_episode_steps": 100, "eval_episodes": 1, "hidden_size": 16, "batch_size": 32, "learning_starts": 32,
        "random_steps": 32}  # fmt: skip
CUT_SECONDS = 3.0


def _sweep(api: Api, url: str) -> dict[str, Any] | None:
    response = httpx.get(url, timeout=10)  # 503 while the API's own connections are cut too
    return response.json() if response.status_code == 200 else None


def _submit(api: Api, body: dict[str, Any]) -> str:
    created = httpx.post(f"{api.base_url}/sweeps", json=body, timeout=10)
    assert created.status_code == 202, created.text
    return api.base_url + created.headers["location"]


def _ended(api: Api, url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ended() -> bool:
        sweep = _sweep(api, url)
        found.update(sweep or {})
        return sweep is not None and sweep["status"] in ("succeeded", "failed", "cancelled")

    wait_for(ended, f"the sweep at {url} to end", deadline=240, logs=api.log)
    return found


def test_a_sweep_survives_a_3_s_database_cut_and_a_lost_commit_reply_and_the_next_sweep_runs(
    processes: Processes, db_proxy: tuple[DbProxy, str], policy_file: Path, tmp_path: Path
) -> None:
    proxy, url = db_proxy
    home = tmp_path / "home"  # a local Ray keeps its token under ~/.ray
    home.mkdir()
    api = processes.api(
        url, EMBEDDED_SWEEP_RUNNER="true", POLICY_FILE=str(policy_file), HOME=str(home), RAY_ADDRESS="",
        RAY_IDLE_SHUTDOWN_SECONDS="300",
    )  # fmt: skip
    first = _submit(
        api,
        {"base": {**TINY, "episodes": 10}, "space": {"seed": {"choice": [1]}}, "search": "grid", "trials": 1,
         "max_concurrent": 1, "max_failures": 0},  # no retries: a trial that fails for the database fails the test
    )  # fmt: skip
    wait_for(
        lambda: any(t["episodes_done"] >= 1 for t in (_sweep(api, first) or {"trials": []})["trials"]),
        "the trial to train",
        deadline=120,
        logs=api.log,
    )
    # The runner, its trial and the API all lose the database for 3 s, mid-episode.
    proxy.cut(CUT_SECONDS)
    time.sleep(CUT_SECONDS)
    wait_for(lambda: proxy.running, "the proxy to be back", logs=api.log)
    # Then one of the trial's episode writes commits but its reply is lost: read back, recorded once.
    proxy.lose_next_commit(b"INSERT INTO episodes")
    assert proxy.wait_commit_lost(60), api.log()

    sweep = _ended(api, first)
    errors = [sweep["error"], *(trial["error"] for trial in sweep["trials"])]
    assert sweep["status"] == "succeeded", (errors, api.log())
    [trial] = sweep["trials"]
    assert (trial["status"], trial["episodes_done"]) == ("succeeded", 10), errors
    episodes = httpx.get(f"{api.base_url}/jobs/{trial['job_id']}/rewards", timeout=10).json()
    assert [row["episode"] for row in episodes["episodes"]] == list(range(10))  # none lost, none twice

    second = _ended(
        api,
        _submit(api, {"base": {**TINY, "episodes": 2}, "space": {"seed": {"choice": [3]}}, "search": "grid",
                      "trials": 1, "max_concurrent": 1}),
    )  # fmt: skip
    assert second["status"] == "succeeded", (second, api.log())
    log = api.log_path.read_text()
    assert "database unavailable" in log or "heartbeat failed" in log  # the cut reached the runner or its trial
    assert "exited with code" not in log and "Tune failed" not in log, api.log()
