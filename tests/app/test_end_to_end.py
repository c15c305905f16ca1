"""End to end: `python -m app` (API + embedded trainer worker) as real processes; train through POST /train,
follow the job to `succeeded`, then drive Pendulum with every action from POST /act."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import gymnasium as gym
import httpx
import numpy as np
import pytest

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready

EPISODES = 20  # the default preset reaches about -150 after ~14 episodes with seed 0
EVAL_EPISODES = 10


def wait_for(predicate_name: str, check: object, *, deadline: float, log_path: Path) -> object:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        result = check()  # type: ignore[operator]
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{predicate_name} did not happen within {deadline} s:\n{log_path.read_text()[-4000:]}")


def _children(pid: int) -> list[int]:
    """Pids of the processes whose parent is `pid` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.slow
def test_train_over_http_then_control_pendulum_over_http(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app.log"
    env = server_env(tmp_path / "data", PORT=str(port), HOST="127.0.0.1", EMBEDDED_WORKER="true", BOOTSTRAP_JOB="false")
    with running([sys.executable, "-m", "app"], env, log_path) as process, httpx.Client(base_url=base_url) as client:
        wait_until_ready(base_url, process, log_path, path="/healthz")
        assert client.post("/act", json={"observation": [1.0, 0.0, 0.0]}).status_code == 503  # nothing trained yet
        # The embedded trainer only takes CPU the API leaves idle (app.infra.supervisor).
        (worker,) = _children(process.pid)
        assert os.sched_getscheduler(worker) == os.SCHED_IDLE

        response = client.post(
            "/train", json={"preset": "default", "episodes": EPISODES, "seed": 0, "promote": "always"}
        )
        assert response.status_code == 202, response.text
        location = response.headers["location"]

        def finished() -> dict[str, object] | None:
            job: dict[str, object] = client.get(location).json()
            assert job["status"] not in ("failed", "cancelled"), job
            return job if job["status"] == "succeeded" else None

        job = wait_for("the training job", finished, deadline=240, log_path=log_path)
        assert isinstance(job, dict)
        policy_id = job["policy_id"]
        assert isinstance(policy_id, int)
        rewards = client.get(f"{location}/rewards").json()
        assert len(rewards["episodes"]) == EPISODES and rewards["evaluations"]

        wait_for("readiness", lambda: client.get("/readyz").status_code == 200, deadline=10, log_path=log_path)

        env_ = gym.make("Pendulum-v1")
        returns = []
        for episode in range(EVAL_EPISODES):
            observation, _ = env_.reset(seed=1000 + episode)
            total, done = 0.0, False
            while not done:
                answer = client.post("/act", json={"observation": observation.tolist()})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["policy_id"] == policy_id
                observation, reward, terminated, truncated, _ = env_.step(np.asarray(body["action"], dtype=np.float32))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env_.close()
        mean_return = float(np.mean(returns))
        assert mean_return >= -200, f"mean return {mean_return:.1f} over {EVAL_EPISODES} episodes: {returns}"

        # Ctrl-C / SIGTERM stops the API and then the worker, cleanly.
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()[-4000:]
    log = log_path.read_text()
    assert "trainer worker stopped" in log and "Traceback" not in log, log[-4000:]
