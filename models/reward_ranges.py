"""The range of one step's reward, where the environment's dynamics bound it: what a model declares by default.

gymnasium 1.x no longer reports a `reward_range` (0.x reported (-inf, inf) for most environments), so the ranges
of the environments this service is used with are computed here from their reward functions; any other
environment has no declared range unless its model is given one (`POST /models`'s `reward_range`), or gymnasium
reports a finite one. A declared range makes every reward outside it a 422, so no client can feed the live
statistics an arbitrary number; without one, the rollout guard uses a trimmed mean instead (store.live_returns).
"""

from __future__ import annotations

import math
from typing import Any

RewardRange = tuple[float, float]

KNOWN_REWARD_RANGES: dict[str, RewardRange] = {
    # -(theta^2 + 0.1 * theta_dot^2 + 0.001 * u^2) with theta in [-pi, pi], |theta_dot| <= 8, |u| <= 2.
    "Pendulum-v1": (-(math.pi**2 + 0.1 * 8.0**2 + 0.001 * 2.0**2), 0.0),
    # -0.1 * u^2 with |u| <= 1 each step, plus 100 on the step that reaches the goal.
    "MountainCarContinuous-v0": (-0.1, 100.0),
}


def default_reward_range(env_id: str, env: Any = None) -> RewardRange | None:
    """The known range of `env_id`, else a finite `reward_range` the (made) environment reports, else None."""
    known = KNOWN_REWARD_RANGES.get(env_id)
    if known is not None:
        return known
    reported = getattr(getattr(env, "unwrapped", None), "reward_range", None)
    if isinstance(reported, tuple) and len(reported) == 2:
        low, high = float(reported[0]), float(reported[1])
        if math.isfinite(low) and math.isfinite(high) and low <= high:
            return low, high
    return None


def as_stored(reward_range: RewardRange | None) -> list[float] | None:
    """The JSON form a model's `spaces` keep: [low, high], or None."""
    return None if reward_range is None else [reward_range[0], reward_range[1]]


def stored_range(spaces: dict[str, Any]) -> RewardRange | None:
    """The declared range kept in a model's `spaces` (None: none declared, also for models made before ranges)."""
    value = spaces.get("reward_range")
    if not isinstance(value, list) or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def outside(reward_range: RewardRange, reward: float) -> bool:
    """Whether a reward is outside the range, with a tolerance for rewards computed in float32 by the client."""
    low, high = reward_range
    slack = 1e-6 * max(1.0, abs(low), abs(high))
    return reward < low - slack or reward > high + slack
