"""What a model's environment looks like from outside: observation and action sizes and bounds, torch-free.

A model (the registry's unit of serving, `store.registry`) is bound to one gymnasium environment, and every policy
of it must fit that environment's spaces. The API checks an `env_id` here before it creates a model or queues a
job, so an id that is unknown, not installed, or not continuous control is a 422 and never a failed job.

Only ids registered with gymnasium are accepted: gymnasium's `module:EnvName` form imports the named module, which
must never be reachable from an HTTP body.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

from episodes import make_env
from models.reward_ranges import RewardRange, as_stored, default_reward_range

logger = logging.getLogger(__name__)

# Make an environment once per id and process: a few milliseconds for classic control, more for physics engines.
_CACHE_SIZE = 64


class EnvironmentUnsupportedError(ValueError):
    """The environment id cannot be served here; the message says why (unknown, not installed, not Box)."""


@dataclass(frozen=True, slots=True)
class EnvSpaces:
    """Sizes and bounds of an environment's flat Box spaces. Infinite bounds are None (JSON has no infinity)."""

    env_id: str
    obs_dim: int
    act_dim: int
    observation_low: tuple[float | None, ...]
    observation_high: tuple[float | None, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    # One step's reward bounds where known (models.reward_ranges); None: no declared range.
    reward_range: RewardRange | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (a model row keeps them as its `spaces`)."""
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "observation_low": list(self.observation_low),
            "observation_high": list(self.observation_high),
            "action_low": list(self.action_low),
            "action_high": list(self.action_high),
            "reward_range": as_stored(self.reward_range),
        }


def _finite_or_none(values: Any) -> tuple[float | None, ...]:
    return tuple(float(v) if math.isfinite(float(v)) else None for v in values)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def describe_env(env_id: str) -> EnvSpaces:
    """The spaces of a registered gymnasium environment with flat Box observations and actions.

    Raises EnvironmentUnsupportedError naming the problem: an unknown id, one whose dependencies are not
    installed, or spaces that are not flat Boxes (e.g. CartPole's discrete actions).
    """
    import gymnasium as gym

    if ":" in env_id or env_id not in gym.envs.registry:
        raise EnvironmentUnsupportedError(f"unknown environment {env_id!r} (not registered with gymnasium)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's deprecation notes are not the caller's problem
            env = make_env(env_id)
    except ValueError as exc:
        raise EnvironmentUnsupportedError(f"environment {env_id!r} cannot be created here: {exc}") from None
    except Exception as exc:  # an environment's own constructor may raise anything; the caller needs one kind
        logger.info("making %s failed: %s", env_id, exc)
        raise EnvironmentUnsupportedError(
            f"environment {env_id!r} cannot be created here: {type(exc).__name__}: {exc}"
        ) from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise EnvironmentUnsupportedError(
                f"environment {env_id!r} has observation space {obs_space}; a flat Box is needed"
            )
        if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
            raise EnvironmentUnsupportedError(
                f"environment {env_id!r} has action space {act_space}; continuous control needs a flat Box"
            )
        action_low, action_high = _finite_or_none(act_space.low), _finite_or_none(act_space.high)
        if None in action_low or None in action_high:
            raise EnvironmentUnsupportedError(
                f"environment {env_id!r} has unbounded actions; the actor scales tanh into finite bounds"
            )
        return EnvSpaces(
            env_id=env_id,
            obs_dim=int(obs_space.shape[0]),
            act_dim=int(act_space.shape[0]),
            observation_low=_finite_or_none(obs_space.low),
            observation_high=_finite_or_none(obs_space.high),
            action_low=tuple(float(v) for v in action_low if v is not None),
            action_high=tuple(float(v) for v in action_high if v is not None),
            reward_range=default_reward_range(env_id, env),
        )
    finally:
        with contextlib.suppress(Exception):
            env.close()
