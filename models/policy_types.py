"""The general policy form: any MLP, its output transform and optional observation normalization.

Torch-free on purpose: the API builds, reads and serves these with numpy only. Whatever file format a policy came
from, it is read into an `ActorWeights`; build one with `models.policy_validation.build_policy_weights`, which
validates it, and write it with `models.policy_format.encode_policy`.

- `Activation`: `relu`, `tanh`, `elu` (alpha 1) or `leaky_relu` (negative slope 0.01, torch's default).
- `DenseLayer(weight, bias, activation)`: one `nn.Linear`, weight in torch's shape `[out, in]`, bias `[out]`, and
  the activation applied after it; `None` for the last layer, whose output goes to the output transform.
- `OutputTransform`: `tanh_scale` (DDPG, TD3, SAC: `low + (tanh(y) + 1) / 2 * (high - low)`) or `clip`
  (PPO, A2C: `clip(y, low, high)`); either way the served action is also clipped to the bounds.
- `ObsNormalization(mean, var, clip, epsilon)`: what VecNormalize does before the network,
  `obs' = clip((obs - mean) / sqrt(var + epsilon), -clip, clip)`; `clip=None` does not clip.
- `origin`: where the policy comes from, free text of 1 to 100 printable characters: `trained` (this service's
  trainer, and every `ddpg-actor/1` file), `sb3:TD3 2.x`, `cleanrl`, `onnx`, ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from models.strict_safetensors import (
    MAX_DIM,
    FloatArray,
    WeightsFormatError,
    finite_number,
    float32_array,
    require_finite,
)

LEGACY_FORMAT_TAG = "ddpg-actor/1"
POLICY_FORMAT_TAG = "policy-mlp/1"
ORIGIN_TRAINED = "trained"

LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU's default, which SB3 and CleanRL use
ELU_ALPHA = 1.0  # torch.nn.ELU's default

NORM_MEAN = "obs_normalization.mean"
NORM_VAR = "obs_normalization.var"


class Activation(StrEnum):
    """The activation after a hidden layer."""

    RELU = "relu"
    TANH = "tanh"
    ELU = "elu"
    LEAKY_RELU = "leaky_relu"


class OutputTransform(StrEnum):
    """How the last layer's output becomes an action within [action_low, action_high]."""

    TANH_SCALE = "tanh_scale"  # low + (tanh(y) + 1) / 2 * (high - low): DDPG, TD3, SAC (its mean action)
    CLIP = "clip"  # clip(y, low, high): PPO, A2C (SB3's predict clips to the action space)


ACTIVATION_NAMES = ", ".join(str(activation) for activation in Activation)
_OUTPUT_NAMES = ", ".join(str(output) for output in OutputTransform)
_ACTIVATION_VALUES = frozenset(str(activation) for activation in Activation)
_OUTPUT_VALUES = frozenset(str(output) for output in OutputTransform)


def parse_activation(value: object, where: str) -> Activation:
    """An activation's name (as a file or a caller gives it) as an `Activation`; `where` names the field."""
    if isinstance(value, str) and value in _ACTIVATION_VALUES:
        return Activation(value)
    raise WeightsFormatError(f"{where} must be one of {ACTIVATION_NAMES}, got {value!r}")


def parse_output(value: object) -> OutputTransform:
    """An output transform's name as an `OutputTransform`."""
    if isinstance(value, str) and value in _OUTPUT_VALUES:
        return OutputTransform(value)
    raise WeightsFormatError(f"output must be one of {_OUTPUT_NAMES}, got {value!r}")


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """One torch `nn.Linear` and the activation after it (None: the last layer, before the output transform).

    The arrays are stored as contiguous float32; their shapes are checked by `build_policy_weights`, which knows
    where the layer sits.
    """

    weight: FloatArray  # [out, in], torch's layout
    bias: FloatArray  # [out]
    activation: Activation | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", float32_array(self.weight))
        object.__setattr__(self, "bias", float32_array(self.bias))
        if self.activation is not None:
            object.__setattr__(self, "activation", parse_activation(self.activation, "activation"))

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True, eq=False)
class ObsNormalization:
    """VecNormalize's frozen observation statistics: obs' = clip((obs - mean) / sqrt(var + epsilon), -clip, clip)."""

    mean: FloatArray  # [obs_dim]
    var: FloatArray  # [obs_dim], >= 0
    clip: float | None = 10.0  # VecNormalize's clip_obs default; None: no clipping
    epsilon: float = 1e-8  # VecNormalize's default

    def __post_init__(self) -> None:
        mean = float32_array(self.mean)
        var = float32_array(self.var)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)
        if mean.ndim != 1 or var.shape != mean.shape or not 0 < mean.shape[0] <= MAX_DIM:
            raise WeightsFormatError(
                f"{NORM_MEAN} and {NORM_VAR} must be vectors of one length (1 to {MAX_DIM}), "
                f"got shapes {list(mean.shape)} and {list(var.shape)}"
            )
        require_finite(mean, NORM_MEAN)
        require_finite(var, NORM_VAR)
        if np.any(var < 0):
            raise WeightsFormatError(f"{NORM_VAR} must be >= 0, got {float(var.min())}")
        epsilon = finite_number(self.epsilon, "obs_normalization.epsilon")
        if epsilon < 0:
            raise WeightsFormatError(f"obs_normalization.epsilon must be >= 0, got {epsilon}")
        object.__setattr__(self, "epsilon", epsilon)
        if self.clip is not None:
            clip = finite_number(self.clip, "obs_normalization.clip")
            if clip <= 0:
                raise WeightsFormatError(f"obs_normalization.clip must be > 0 (or null for none), got {clip}")
            object.__setattr__(self, "clip", clip)
        if np.any(self.std() == 0):
            raise WeightsFormatError(f"{NORM_VAR} + epsilon must be > 0 everywhere (a zero would divide by zero)")

    def std(self) -> FloatArray:
        """sqrt(var + epsilon) in float32, as every forward pass here computes it."""
        std: FloatArray = np.sqrt(self.var + np.float32(self.epsilon))
        return std

    @property
    def obs_dim(self) -> int:
        return int(self.mean.shape[0])


@dataclass(frozen=True, eq=False)
class ActorWeights:
    """A validated policy in the general form, whatever file format it came from.

    Build one with `models.policy_validation.build_policy_weights` (or decode one with
    `models.weights.decode_actor`), never directly: the validation lives there.
    """

    layers: tuple[DenseLayer, ...]
    output: OutputTransform
    action_low: FloatArray
    action_high: FloatArray
    obs_normalization: ObsNormalization | None
    env_id: str
    config: dict[str, Any]
    seed: int | None
    eval_mean_return: float | None
    created_at: str
    origin: str = ORIGIN_TRAINED
    # The tag of the file this came from (or is written as): `ddpg-actor/1` keeps its metadata keys as they were.
    format: str = POLICY_FORMAT_TAG

    @property
    def obs_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def act_dim(self) -> int:
        return self.layers[-1].out_features

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(layer.out_features for layer in self.layers[:-1])

    @property
    def activations(self) -> tuple[Activation, ...]:
        return tuple(parse_activation(layer.activation, "activation") for layer in self.layers[:-1])

    @property
    def hidden_size(self) -> int:
        """The widest hidden layer (0 for a linear policy); for a `ddpg-actor/1` file, its `hidden_size`."""
        return max(self.hidden_sizes, default=0)

    @property
    def tensors(self) -> dict[str, FloatArray]:
        """The tensors under the names of this policy's file format (no copies)."""
        if self.format == LEGACY_FORMAT_TAG:
            names = [f"linear{index}" for index in range(1, len(self.layers) + 1)]
        else:
            names = [f"layers.{index}" for index in range(len(self.layers))]
        tensors: dict[str, FloatArray] = {}
        for name, layer in zip(names, self.layers, strict=True):
            tensors[f"{name}.weight"] = layer.weight
            tensors[f"{name}.bias"] = layer.bias
        if self.obs_normalization is not None:
            tensors[NORM_MEAN] = self.obs_normalization.mean
            tensors[NORM_VAR] = self.obs_normalization.var
        return tensors

    def metadata(self) -> dict[str, Any]:
        """The metadata as plain JSON-able values (for the registry and the API)."""
        if self.format == LEGACY_FORMAT_TAG:
            # Exactly the keys `ddpg-actor/1` always had, so stored policies and API answers do not change.
            return {
                "format": LEGACY_FORMAT_TAG,
                "env_id": self.env_id,
                "obs_dim": self.obs_dim,
                "act_dim": self.act_dim,
                "hidden_size": self.hidden_size,
                "action_low": self.action_low.tolist(),
                "action_high": self.action_high.tolist(),
                "config": self.config,
                "seed": self.seed,
                "eval_mean_return": self.eval_mean_return,
                "created_at": self.created_at,
            }
        norm = self.obs_normalization
        return {
            "format": POLICY_FORMAT_TAG,
            "origin": self.origin,
            "env_id": self.env_id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activations": [str(activation) for activation in self.activations],
            "output": str(self.output),
            "action_low": self.action_low.tolist(),
            "action_high": self.action_high.tolist(),
            "obs_normalization": None if norm is None else {"clip": norm.clip, "epsilon": norm.epsilon},
            "config": self.config,
            "seed": self.seed,
            "eval_mean_return": self.eval_mean_return,
            "created_at": self.created_at,
        }

    def metadata_strings(self) -> dict[str, str]:
        """The metadata as the safetensors header stores it: strings, lists and dicts JSON-encoded."""
        strings: dict[str, str] = {}
        for key, value in self.metadata().items():
            if key in ("format", "origin", "env_id", "created_at", "output"):
                strings[key] = str(value)
            elif key in ("seed",):
                strings[key] = "" if value is None else str(value)
            elif key == "eval_mean_return":
                strings[key] = "" if value is None else repr(float(value))
            elif key in ("obs_dim", "act_dim", "hidden_size"):
                strings[key] = str(value)
            else:
                strings[key] = json.dumps(value, sort_keys=True)
        return strings
