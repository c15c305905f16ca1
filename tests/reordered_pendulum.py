"""An environment no server can import: Pendulum with its observation reordered and its action rescaled to [-1, 1].

Used by the online-learning tests. A policy trained on plain Pendulum-v1 fails here (the observation's columns are
permuted), so reaching a good return proves the learner learned this environment from its recorded experience.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
HELDOUT_SEED_BASE = 1_000_000


class ReorderedPendulum(gym.Env[FloatArray, FloatArray]):
    """Observation [theta_dot, sin, cos] (Pendulum gives [cos, sin, theta_dot]); action in [-1, 1] (torque / 2)."""

    def __init__(self) -> None:
        self._inner = gym.make("Pendulum-v1")
        self.observation_space = gym.spaces.Box(
            low=np.array([-8.0, -1.0, -1.0], np.float32), high=np.array([8.0, 1.0, 1.0], np.float32)
        )
        self.action_space = gym.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)

    @staticmethod
    def _reorder(obs: FloatArray) -> FloatArray:
        return np.array([obs[2], obs[1], obs[0]], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[FloatArray, dict[str, Any]]:
        obs, info = self._inner.reset(seed=seed, options=options)
        return self._reorder(obs), info

    def step(self, action: FloatArray) -> tuple[FloatArray, float, bool, bool, dict[str, Any]]:
        torque = 2.0 * np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self._inner.step(torque)
        return self._reorder(obs), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self._inner.close()


def heldout_mean_return(act: Callable[[FloatArray], npt.ArrayLike], episodes: int = 20) -> float:
    """Mean return of a deterministic policy over `episodes` episodes on seeds no training episode used."""
    env = ReorderedPendulum()
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=HELDOUT_SEED_BASE + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(np.asarray(act(obs), dtype=np.float32))
            total += reward
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))
