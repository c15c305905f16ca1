"""Recorded episodes for the experience tests: interleaved sessions, ended by terminated or truncated, one left open,
one with a lost step. Imports neither minari nor the service (a subprocess that checks the API's imports uses it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.experience_chunks import ExperienceColumns
from models.experience_export import BoxSpaces

OBS_DIM, ACT_DIM = 3, 1
SPACES = BoxSpaces(
    observation_low=(-1.0, -1.0, None),
    observation_high=(1.0, 1.0, None),
    action_low=(-2.0,),
    action_high=(2.0,),
)


@dataclass
class Episode:
    session: str
    episode: int
    length: int
    end: str  # "terminated", "truncated" or "open"
    lose_step: int | None = None  # a step missing from the recording


EPISODES = [
    Episode("alpha", 11, 5, "terminated"),
    Episode("beta", 2**62 + 3, 7, "truncated"),
    Episode("alpha", 12, 4, "truncated"),
    Episode("gamma", 5, 6, "open"),
    Episode("delta", 9, 8, "terminated", lose_step=3),
    Episode("epsilon-é", 1, 1, "terminated"),
]


def episode_columns(spec: Episode, rng: np.random.Generator) -> ExperienceColumns:
    n = spec.length
    observations = rng.normal(size=(n + 1, OBS_DIM)).astype(np.float32)
    terminated = np.zeros(n, np.bool_)
    truncated = np.zeros(n, np.bool_)
    if spec.end == "terminated":
        terminated[-1] = True
    elif spec.end == "truncated":
        truncated[-1] = True
    return ExperienceColumns(
        observation=observations[:-1],
        action=rng.uniform(-2, 2, size=(n, ACT_DIM)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32),
        next_observation=observations[1:],
        terminated=terminated,
        truncated=truncated,
        policy_id=np.full(n, 4, np.int64),
        session=np.array([spec.session] * n, dtype=object),
        episode=np.full(n, spec.episode, np.int64),
        step=np.arange(n, dtype=np.int32),
        noise=rng.normal(size=(n, ACT_DIM)).astype(np.float32),
        noise_scale=np.full(n, 0.2, np.float32),
        time=rng.uniform(0, 100, size=n).cumsum() + 1.7e9,
    )
