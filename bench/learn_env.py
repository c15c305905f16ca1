"""The environment of the online-learning benchmarks (bench/learn_bench.py, bench/learn_sim.py): Pendulum with its
observation reordered and its action rescaled to [-1, 1], defined here as a client would define its own, and the
held-out evaluation of a served policy's bytes on it."""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "bench.learn_env:ReorderedPendulum-v0"
HELDOUT_EPISODES = 20
# Milliseconds of real time each environment step takes (learn_bench's --env-step-ms, in this variable so that every
# environment gymnasium makes from ENV_ID sees it): an environment paced to the clock, as a robot or a real-time
# simulator is, whose next step is ready that long after the last one returned, however the time between was spent.
# Unset or 0: as fast as the CPU allows.
STEP_MS_VARIABLE = "LEARN_BENCH_ENV_STEP_MS"


class ReorderedPendulum(gym.Env[np.ndarray, np.ndarray]):
    """Pendulum-v1 observed as [theta_dot, sin, cos], driven with actions in [-1, 1] (torque / 2)."""

    def __init__(self, max_episode_steps: int | None = None) -> None:
        self._inner = gym.make("Pendulum-v1", max_episode_steps=max_episode_steps)
        self.observation_space = gym.spaces.Box(
            low=np.array([-8.0, -1.0, -1.0], np.float32), high=np.array([8.0, 1.0, 1.0], np.float32)
        )
        self.action_space = gym.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)
        self._step_seconds = float(os.environ.get(STEP_MS_VARIABLE) or 0) / 1000
        self._ready_at = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self._inner.reset(seed=seed, options=options)
        return obs[[2, 1, 0]].astype(np.float32), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._step_seconds > 0:
            time.sleep(max(0.0, self._ready_at - time.monotonic()))
            self._ready_at = time.monotonic() + self._step_seconds
        obs, reward, terminated, truncated, info = self._inner.step(2.0 * np.clip(action, -1.0, 1.0))
        return obs[[2, 1, 0]].astype(np.float32), float(reward), bool(terminated), bool(truncated), info


if "ReorderedPendulum-v0" not in gym.registry:
    gym.register("ReorderedPendulum-v0", entry_point=ReorderedPendulum)


def evaluate_weights(weights: bytes) -> float:
    """Held-out mean return of a served policy's bytes: HELDOUT_EPISODES episodes on seeds no training episode uses
    (trainer.evaluation.evaluate_policy), never paced (an evaluation is not on a row's clock)."""
    from models.policy import NumpyActor
    from trainer.evaluation import evaluate_policy

    os.environ.pop(STEP_MS_VARIABLE, None)
    actor = NumpyActor.from_bytes(weights)
    return evaluate_policy(actor.act, ENV_ID, episodes=HELDOUT_EPISODES).mean_return
