"""Deterministic evaluation: the policy without noise on fixed evaluation seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from episodes import run_episodes

FloatArray = npt.NDArray[np.float32]
# observations (n, obs_dim) -> actions (n, act_dim) within the env's own bounds
BatchPolicy = Callable[[FloatArray], npt.ArrayLike]

# Evaluation episodes reset with seeds EVAL_SEED_BASE, EVAL_SEED_BASE + 1, ...: the same start states for
# every run and every evaluation, so numbers are comparable across checkpoints, seeds and presets, and
# far from the small training seeds so evaluation never replays a training episode's start.
EVAL_SEED_BASE = 1_000_000


@dataclass(frozen=True)
class EvaluationStats:
    mean_return: float
    std_return: float
    returns: tuple[float, ...]


def evaluate_policy(
    policy: BatchPolicy,
    env_id: str,
    *,
    episodes: int,
    max_episode_steps: int | None = None,
    seed_base: int = EVAL_SEED_BASE,
) -> EvaluationStats:
    """Run `episodes` full episodes of a deterministic batch policy and summarise their returns.

    The episodes run in lockstep (`batched=True`), one env each, so the policy is called once per time step on
    a batch rather than once per env step: for a numpy actor that is most of the evaluation's cost saved.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    results = run_episodes(
        policy, env_id, range(seed_base, seed_base + episodes), max_steps=max_episode_steps, batched=True
    )
    returns = np.array([result.episode_return for result in results], dtype=np.float64)
    return EvaluationStats(
        mean_return=float(returns.mean()), std_return=float(returns.std()), returns=tuple(float(r) for r in returns)
    )
