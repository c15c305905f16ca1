"""The environment seam: make the gymnasium env and read its sizes and bounds (nothing Pendulum-specific)."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EnvSpec:
    """What the trainer needs to know about an environment, read from its spaces."""

    env_id: str
    obs_dim: int
    act_dim: int
    action_low: FloatArray
    action_high: FloatArray

    def scale_action(self, squashed: FloatArray) -> FloatArray:
        """Map the actor's [-1, 1] output to the env's bounds: low + (a + 1) / 2 * (high - low)."""
        scaled: FloatArray = self.action_low + (squashed + 1.0) * 0.5 * (self.action_high - self.action_low)
        return scaled


def make_env(env_id: str, max_episode_steps: int | None = None) -> gym.Env[FloatArray, FloatArray]:
    """A gymnasium env with a flat Box observation and a bounded Box action, or ValueError saying why not."""
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps)
    except gym.error.Error as exc:
        raise ValueError(f"cannot make environment {env_id!r}: {exc}") from None
    env_spec(env, env_id)  # validate now, before any training work
    return env


def env_spec(env: gym.Env[FloatArray, FloatArray], env_id: str) -> EnvSpec:
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"{env_id}: DDPG here needs a flat Box observation space, got {obs_space}")
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise ValueError(f"{env_id}: DDPG needs a flat continuous (Box) action space, got {act_space}")
    low = np.asarray(act_space.low, dtype=np.float32)
    high = np.asarray(act_space.high, dtype=np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise ValueError(f"{env_id}: the action space must have finite bounds with low < high, got {act_space}")
    return EnvSpec(
        env_id=env_id,
        obs_dim=int(obs_space.shape[0]),
        act_dim=int(act_space.shape[0]),
        action_low=low,
        action_high=high,
    )
