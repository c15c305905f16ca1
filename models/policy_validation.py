"""Building a validated general policy: the one place its checks live, whatever the policy's source.

`build_policy_weights(layers, output=..., action_low=..., action_high=..., obs_normalization=None, env_id=...,
origin="trained", config=None, seed=None, eval_mean_return=None, created_at=None) -> ActorWeights` validates
everything (the shapes chain, every value finite, bounds ordered, sizes capped) and raises `WeightsFormatError`
naming the tensor or field at fault. Importers, the trainer and the `policy-mlp/1` decoder build through it; the
`ddpg-actor/1` decoder through `legacy_actor_weights`, which keeps that format's tensor names in its messages.
Numpy only, like the rest of models (bar its torch networks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from models.policy_types import (
    ACTIVATION_NAMES,
    LEGACY_FORMAT_TAG,
    NORM_MEAN,
    ORIGIN_TRAINED,
    POLICY_FORMAT_TAG,
    ActorWeights,
    DenseLayer,
    ObsNormalization,
    OutputTransform,
    parse_output,
)
from models.strict_safetensors import (
    MAX_DIM,
    MAX_LAYERS,
    MAX_PARAMETERS,
    FloatArray,
    WeightsFormatError,
    finite_number,
    float32_array,
    require_finite,
)

MAX_ORIGIN_CHARS = 100


def utc_now_iso() -> str:
    """created_at: ISO 8601 in UTC with an explicit offset, so every reader parses the same instant."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_policy_weights(
    layers: Sequence[DenseLayer],
    *,
    output: OutputTransform | str,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    obs_normalization: ObsNormalization | None = None,
    env_id: str,
    origin: str = ORIGIN_TRAINED,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    eval_mean_return: float | None = None,
    created_at: str | None = None,
) -> ActorWeights:
    """A validated policy; WeightsFormatError naming the tensor or field for anything that would not serve."""
    return _validated(
        layers,
        output=output,
        action_low=action_low,
        action_high=action_high,
        obs_normalization=obs_normalization,
        env_id=env_id,
        origin=origin,
        config=config,
        seed=seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at if created_at is not None else utc_now_iso(),
        file_format=POLICY_FORMAT_TAG,
        layer_names=[f"layers.{index}" for index in range(len(layers))],
    )


def legacy_actor_weights(
    layers: Sequence[DenseLayer],
    *,
    action_low: FloatArray,
    action_high: FloatArray,
    env_id: str,
    config: Mapping[str, Any],
    seed: int | None,
    eval_mean_return: float | None,
    created_at: str,
) -> ActorWeights:
    """The general form of a decoded `ddpg-actor/1` file (models.weights): relu, relu, then tanh_scale."""
    return _validated(
        layers,
        output=OutputTransform.TANH_SCALE,
        action_low=action_low,
        action_high=action_high,
        obs_normalization=None,
        env_id=env_id,
        origin=ORIGIN_TRAINED,
        config=config,
        seed=seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at,
        file_format=LEGACY_FORMAT_TAG,
        layer_names=[f"linear{index}" for index in range(1, len(layers) + 1)],
    )


def _validated(
    layers: Sequence[DenseLayer],
    *,
    output: OutputTransform | str,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    obs_normalization: ObsNormalization | None,
    env_id: str,
    origin: str,
    config: Mapping[str, Any] | None,
    seed: int | None,
    eval_mean_return: float | None,
    created_at: str,
    file_format: str,
    layer_names: Sequence[str],
) -> ActorWeights:
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise WeightsFormatError(f"a policy has 1 to {MAX_LAYERS} layers, got {len(layers)}")
    parameters = 0
    previous_out: int | None = None
    for index, (name, layer) in enumerate(zip(layer_names, layers, strict=True)):
        if not isinstance(layer, DenseLayer):
            raise WeightsFormatError(f"{name} must be a DenseLayer, got {type(layer).__name__}")
        weight, bias = layer.weight, layer.bias
        if weight.ndim != 2 or not (0 < weight.shape[0] <= MAX_DIM and 0 < weight.shape[1] <= MAX_DIM):
            raise WeightsFormatError(
                f"tensor {name}.weight must be [out, in] with sizes 1 to {MAX_DIM}, got shape {list(weight.shape)}"
            )
        if bias.shape != (weight.shape[0],):
            raise WeightsFormatError(
                f"tensor {name}.bias has shape {list(bias.shape)}, expected [{weight.shape[0]}] (the weight's out)"
            )
        if previous_out is not None and weight.shape[1] != previous_out:
            raise WeightsFormatError(
                f"tensor {name}.weight takes {weight.shape[1]} inputs but the layer before gives {previous_out}"
            )
        previous_out = int(weight.shape[0])
        parameters += weight.size + bias.size
        if parameters > MAX_PARAMETERS:
            raise WeightsFormatError(f"the policy has more than {MAX_PARAMETERS} parameters")
        require_finite(weight, f"{name}.weight")
        require_finite(bias, f"{name}.bias")
        is_last = index == len(layers) - 1
        if is_last and layer.activation is not None:
            raise WeightsFormatError(
                f"{name} is the last layer: its activation must be None (the output transform follows it), "
                f"got {layer.activation!s}"
            )
        if not is_last and layer.activation is None:
            raise WeightsFormatError(f"{name} is a hidden layer: it needs an activation ({ACTIVATION_NAMES})")
    obs_dim = layers[0].in_features
    act_dim = layers[-1].out_features
    low = _bound_vector(action_low, "action_low", act_dim)
    high = _bound_vector(action_high, "action_high", act_dim)
    if not np.all(low < high):
        raise WeightsFormatError("metadata action_low must be strictly below action_high")
    if obs_normalization is not None:
        if not isinstance(obs_normalization, ObsNormalization):
            raise WeightsFormatError("obs_normalization must be an ObsNormalization or None")
        if obs_normalization.obs_dim != obs_dim:
            raise WeightsFormatError(
                f"tensor {NORM_MEAN} has {obs_normalization.obs_dim} values but the policy takes {obs_dim} observations"
            )
    if not isinstance(env_id, str):
        raise WeightsFormatError(f"env_id must be a string, got {env_id!r}")
    if not isinstance(origin, str) or not 0 < len(origin) <= MAX_ORIGIN_CHARS or not origin.isprintable():
        raise WeightsFormatError(f"origin must be 1 to {MAX_ORIGIN_CHARS} printable characters, got {origin!r}")
    config_dict = dict(config or {})
    try:
        json.dumps(config_dict)
    except (TypeError, ValueError) as exc:
        raise WeightsFormatError(f"config must be JSON-encodable: {exc}") from None
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise WeightsFormatError(f"seed must be an integer or None, got {seed!r}")
    eval_score = None if eval_mean_return is None else finite_number(eval_mean_return, "eval_mean_return")
    return ActorWeights(
        layers=tuple(layers),
        output=parse_output(output),
        action_low=low,
        action_high=high,
        obs_normalization=obs_normalization,
        env_id=env_id,
        config=config_dict,
        seed=seed,
        eval_mean_return=eval_score,
        created_at=str(created_at),
        origin=origin,
        format=file_format,
    )


def _bound_vector(value: npt.ArrayLike, name: str, length: int) -> FloatArray:
    array = float32_array(value).ravel()
    if array.shape != (length,):
        raise WeightsFormatError(f"{name} must have {length} values (act_dim), got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise WeightsFormatError(f"{name} must be finite numbers, got {array.tolist()}")
    return array
