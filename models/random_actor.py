"""A valid `ddpg-actor/1` file with random weights, made with numpy only (no torch, no training).

For what needs a servable policy without training one: benchmarks, smoke tests of a deployment, and tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.weights import encode_actor


def random_actor_bytes(
    seed: int = 0,
    *,
    obs_dim: int = 3,
    act_dim: int = 1,
    hidden_size: int = 8,
    weight_scale: float | None = 1.0,
    bias_scale: float = 1.0,
    action_bound: float = 2.0,
    eval_mean_return: float | None = None,
    config: dict[str, Any] | None = None,
    env_id: str = "Pendulum-v1",
) -> bytes:
    """Random weights of the seed Actor's shapes; the same arguments give the same bytes.

    `weight_scale=None` scales each layer by 1/sqrt(fan_in), like an initialised network; `bias_scale=0`
    gives zero biases. Different seeds give different actions, which tests of policy swaps rely on.
    """
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for index, (fan_in, fan_out) in enumerate(
        ((obs_dim, hidden_size), (hidden_size, hidden_size), (hidden_size, act_dim)), 1
    ):
        scale = 1 / math.sqrt(fan_in) if weight_scale is None else weight_scale
        tensors[f"linear{index}.weight"] = rng.normal(scale=scale, size=(fan_out, fan_in))
        # Drawn in this order (weight, then bias) so a seed keeps meaning the same actor.
        tensors[f"linear{index}.bias"] = rng.normal(scale=bias_scale, size=fan_out) if bias_scale else np.zeros(fan_out)
    return encode_actor(
        tensors,
        env_id=env_id,
        action_low=[-action_bound] * act_dim,
        action_high=[action_bound] * act_dim,
        config=config if config is not None else {"hidden_size": hidden_size},
        seed=seed,
        eval_mean_return=eval_mean_return,
        created_at="2026-01-01T00:00:00+00:00",
    )
