"""Valid policies with random weights, made with numpy only (no torch, no training): `ddpg-actor/1` bytes, or any
MLP of the general format.

For what needs a servable policy without training one: benchmarks, smoke tests of a deployment, and tests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.policy_types import Activation, ActorWeights, DenseLayer, ObsNormalization
from models.policy_validation import build_policy_weights
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


def random_policy_weights(
    seed: int = 0,
    *,
    sizes: Sequence[int] = (3, 64, 64, 1),
    activations: Sequence[str] | None = None,
    output: str = "tanh_scale",
    normalized: bool = False,
    action_bound: float = 2.0,
    env_id: str = "Pendulum-v1",
    origin: str = "trained",
) -> ActorWeights:
    """A random general policy (models.policy_format) of layer sizes (obs_dim, hidden..., act_dim).

    Weights scaled by 1/sqrt(fan_in) and biases by 0.1, like an initialised network; `activations` defaults to
    relu for every hidden layer. `normalized` adds observation statistics far from zero mean and unit variance
    (mean up to 50, standard deviation up to 20), the case normalization is for.
    """
    rng = np.random.default_rng(seed)
    names = ["relu"] * (len(sizes) - 2) if activations is None else list(activations)
    layers = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        activation = Activation(names[index]) if index < len(sizes) - 2 else None
        weight = rng.normal(scale=1 / math.sqrt(fan_in), size=(fan_out, fan_in)).astype(np.float32)
        layers.append(DenseLayer(weight, rng.normal(scale=0.1, size=fan_out).astype(np.float32), activation))
    normalization = None
    if normalized:
        obs_dim = sizes[0]
        mean = rng.uniform(-50.0, 50.0, obs_dim).astype(np.float32)
        var = (rng.uniform(0.5, 20.0, obs_dim) ** 2).astype(np.float32)
        normalization = ObsNormalization(mean, var, clip=10.0, epsilon=1e-8)
    return build_policy_weights(
        layers,
        output=output,
        action_low=[-action_bound] * sizes[-1],
        action_high=[action_bound] * sizes[-1],
        obs_normalization=normalization,
        env_id=env_id,
        origin=origin,
        config={},
        seed=seed,
        created_at="2026-01-01T00:00:00+00:00",
    )
