"""Online learning end to end, as real processes: `python -m app` (the API with its embedded learner process; no job
worker, which nothing here uses), a model known only by its spaces, and the client driving an environment defined only
in this test file (Pendulum with its observation reordered and its action rescaled) over WS /act/stream. The learner
learns it from nothing to a held-out mean return of at least -200 over 20 episodes, evaluated through POST /act without
a session, within 40,000 environment steps; its process is SIGKILLed mid-run and another takes the learner over.

The client waits for the learner to catch up between batches of episodes (its lag and its update-to-data ratio, both
from GET /models/{name}/learner): the environment-step budget is then a fact about learning, not about how fast this
loaded machine ran the learner. Deadlines only keep a broken build from hanging; nothing asserts speed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import numpy as np
import pytest

from ddpg_client import PolicyClient
from models.training_config import make_config
from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready

pytestmark = pytest.mark.slow

MODEL = "reordered-pendulum"
BUDGET = 40_000  # environment steps
HELDOUT_EPISODES = 20
HELDOUT_SEED_BASE = 1_000_000
DEADLINE = 900.0


class ReorderedPendulum(gym.Env[np.ndarray, np.ndarray]):
    """Pendulum-v1 observed as [theta_dot, sin, cos] and driven with actions in [-1, 1] (torque / 2): no server can
    import it, and no policy trained on plain Pendulum fits it."""

    def __init__(self) -> None:
        self._inner = gym.make("Pendulum-v1")
        self.observation_space = gym.spaces.Box(
            low=np.array([-8.0, -1.0, -1.0], np.float32), high=np.array([8.0, 1.0, 1.0], np.float32)
        )
        self.action_space = gym.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self._inner.reset(seed=seed, options=options)
        return obs[[2, 1, 0]].astype(np.float32), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self._inner.step(2.0 * np.clip(action, -1.0, 1.0))
        return obs[[2, 1, 0]].astype(np.float32), float(reward), bool(terminated), bool(truncated), info


def heldout_mean_return(client: httpx.Client) -> float:
    """20 held-out episodes in lockstep, every action from POST /act without a session (the champion, no noise)."""
    envs = [ReorderedPendulum() for _ in range(HELDOUT_EPISODES)]
    observations = np.stack([env.reset(seed=HELDOUT_SEED_BASE + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(HELDOUT_EPISODES)
    for _ in range(200):
        answer = client.post("/act", json={"model": MODEL, "observations": observations.tolist()})
        assert answer.status_code == 200, answer.text
        actions = np.asarray(answer.json()["actions"], np.float32)
        for i, env in enumerate(envs):
            observation, reward, _terminated, _truncated, _ = env.step(actions[i])
            observations[i] = observation
            returns[i] += reward
    return float(returns.mean())


def _learner(client: httpx.Client) -> dict[str, Any]:
    answer = client.get(f"/models/{MODEL}/learner")
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    assert state["status"] in ("queued", "running"), state
    return state


def _caught_up(http: httpx.Client, steps: int) -> dict[str, Any] | None:
    """The learner's state once it consumed (nearly) every recorded step and ran the updates they are due."""
    state = _learner(http)
    consumed = state["transitions_consumed"]
    due = consumed >= steps - 400 and state["lag_transitions"] == 0
    learned = state["updates"] >= make_config("default").updates_after(consumed) - 400
    return state if due and learned and state["status"] == "running" else None


def _wait(what: str, check: Any, log_path: Path, deadline: float) -> Any:
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen in time:\n{log_path.read_text()[-6000:]}")


def test_a_client_side_environment_is_learned_online_and_survives_a_killed_learner(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app.log"
    env = server_env(
        tmp_path / "data",
        PORT=str(port),
        HOST="127.0.0.1",
        # The learner process only: the job worker would be a third process, importing PyTorch for no job.
        EMBEDDED_WORKER="false",
        EMBEDDED_LEARNER="true",
        BOOTSTRAP_JOB="false",
        POLICY_REFRESH_SECONDS="0.2",
        EXPERIENCE_FLUSH_SECONDS="0.2",
        LEARNER_LEASE_SECONDS="3",
    )
    deadline = time.monotonic() + DEADLINE
    with (
        running([sys.executable, "-m", "app"], env, log_path) as process,
        httpx.Client(base_url=base_url, timeout=30) as http,
        PolicyClient(base_url, timeout=30) as client,
    ):
        wait_until_ready(base_url, process, log_path, path="/healthz")
        spaces = {
            "name": MODEL,
            "observation_space": {"low": [-8.0, -1.0, -1.0], "high": [8.0, 1.0, 1.0]},
            "action_space": {"low": [-1.0], "high": [1.0]},
        }
        assert http.post("/models", json=spaces).status_code == 201
        started = http.put(f"/models/{MODEL}/learner", json={"publish_every": 250, "seed": 0})
        assert started.status_code == 202, started.text

        steps, killed, best, last_eval = 0, None, -np.inf, 0
        first_worker = None
        while steps < BUDGET:
            assert process.poll() is None, log_path.read_text()[-6000:]
            episodes = client.drive(ReorderedPendulum(), model=MODEL, episodes=5, seed=steps, progress=False)
            steps += sum(episode.steps for episode in episodes)
            if steps <= 1000:  # the first thousand steps come before any publish: the warm-up
                assert any(-1 in episode.policy_ids for episode in episodes)
            state = _wait("the learner catching up", partial(_caught_up, http, steps), log_path, deadline)
            first_worker = first_worker or state["worker_id"]
            if killed is None and state["publishes"] >= 3:
                # Mid-run: kill the learner's process outright (its pid is in its holder id: host-pid-random).
                killed = state
                os.kill(int(state["worker_id"].rsplit("-", 2)[1]), signal.SIGKILL)
                _wait(
                    "another learner process taking over",
                    lambda: (s := _learner(http))["attempts"] >= 2 and s["status"] == "running",
                    log_path,
                    deadline,
                )
            if state["publishes"] and steps - last_eval >= 2000:
                last_eval = steps
                best = heldout_mean_return(http)
                if best >= -200:
                    break
        assert best >= -200, f"held-out mean return {best:.1f} after {steps} steps:\n{log_path.read_text()[-6000:]}"
        assert killed is not None, "the learner published too rarely to be killed mid-run"
        final = _learner(http)
        assert final["worker_id"] != killed["worker_id"] and "stopped heartbeating" in (final["error"] or "")
        # Resumed, not restarted: the count went on from the checkpoint.
        assert final["updates"] > killed["updates"] and final["publishes"] > killed["publishes"]
        assert final["policies"] and final["policies"][0]["policy_id"] == final["last_policy_id"]
        assert 0.5 <= final["update_to_data"] <= 1.0
        experience = http.get(f"/models/{MODEL}/experience").json()
        assert experience["transitions"] >= steps - 5 * 200  # every step recorded (the newest flushes aside)
