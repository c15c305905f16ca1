"""A badly scaled Pendulum for normalization tests: its observations are offset and stretched per dimension."""

import gymnasium as gym
import numpy as np

SCALE = np.array([1000.0, 0.001, 50.0])
OFFSET = np.array([300.0, -2.0, 0.0])
ENV_ID = "ScaledPendulum-v0"


def make_scaled_pendulum(**kwargs: object) -> gym.Env:
    env = gym.make("Pendulum-v1", **kwargs)
    low = (env.observation_space.low * SCALE + OFFSET).astype(np.float32)  # type: ignore[attr-defined]
    high = (env.observation_space.high * SCALE + OFFSET).astype(np.float32)  # type: ignore[attr-defined]
    space = gym.spaces.Box(np.minimum(low, high), np.maximum(low, high), dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: (obs * SCALE + OFFSET).astype(np.float32), space)


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=make_scaled_pendulum, max_episode_steps=200)
