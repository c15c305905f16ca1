"""Deterministic evaluation: the policy without noise on fixed evaluation seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.env import make_env

FloatArray = npt.NDArray[np.float32]
Policy = Callable[[FloatArray], npt.ArrayLike]

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
    policy: Policy,
    env_id: str,
    *,
    episodes: int,
    max_episode_steps: int | None = None,
    seed_base: int = EVAL_SEED_BASE,
) -> EvaluationStats:
    """Run `episodes` full episodes with `policy` (observation -> action in the env's own bounds)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_env(env_id, max_episode_steps)
    returns: list[float] = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed_base + i)
            total = 0.0
            while True:
                obs, reward, terminated, truncated, _ = env.step(np.asarray(policy(obs), dtype=np.float32))
                total += float(reward)
                if terminated or truncated:
                    break
            returns.append(total)
    finally:
        env.close()
    array = np.asarray(returns, dtype=np.float64)
    return EvaluationStats(mean_return=float(array.mean()), std_return=float(array.std()), returns=tuple(returns))
