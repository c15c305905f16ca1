"""The neutral description every importer produces: an MLP actor, its output transform, bounds and normalization.

    observation -> [clip((obs - mean) / sqrt(var + epsilon), -clip, clip)]     # when obs_normalization is set
      -> for each layer: activation(x @ weight.T + bias)
      -> tanh_scale: low + (tanh(x) + 1) / 2 * (high - low)  |  clip: clip(x, low, high)

This is what `model.predict(obs, deterministic=True)` computes for the SB3 policies we import (TD3/DDPG/SAC:
tanh_scale; PPO/A2C: clip), what a CleanRL actor computes, and what the supported ONNX graphs compute. It is
converted to the stored weights format in one place (`models.imports.native`), and `forward` here is the reference
the tests hold every importer to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.imports.errors import ImportRefusedError

FloatArray = npt.NDArray[np.float32]
Activation = Literal["relu", "tanh", "elu", "leaky_relu", "identity"]
OutputTransform = Literal["tanh_scale", "clip"]
ACTIVATIONS: tuple[Activation, ...] = ("relu", "tanh", "elu", "leaky_relu", "identity")
# The negative slope of torch's nn.LeakyReLU and ONNX LeakyRelu's default; ELU's alpha is 1 in both.
LEAKY_RELU_SLOPE = 0.01
# Caps what a file may declare, so a hostile one cannot make us allocate gigabytes (models.weights has the same).
MAX_DIM = 65536
MAX_LAYERS = 64


@dataclass(frozen=True)
class DenseLayer:
    """One fully connected layer, torch's nn.Linear layout: weight [out, in], bias [out]."""

    weight: FloatArray
    bias: FloatArray
    activation: Activation


@dataclass(frozen=True)
class ObsNormalization:
    """VecNormalize's observation statistics: obs -> clip((obs - mean) / sqrt(var + epsilon), -clip, clip)."""

    mean: FloatArray
    var: FloatArray
    clip: float = 10.0
    epsilon: float = 1e-8

    def apply(self, observations: npt.ArrayLike) -> FloatArray:
        x = np.asarray(observations, dtype=np.float32)
        scale = np.sqrt(self.var + np.float32(self.epsilon)).astype(np.float32)
        out: FloatArray = np.clip((x - self.mean) / scale, -self.clip, self.clip).astype(np.float32)
        return out


@dataclass(frozen=True)
class ImportedMlp:
    """An actor read from a foreign file, checked: shapes chain, values finite, bounds ordered."""

    layers: tuple[DenseLayer, ...]
    output_transform: OutputTransform
    action_low: FloatArray
    action_high: FloatArray
    # Where it came from, as GET /policies/{id} shows it: `sb3:TD3 2.3.2`, `cleanrl`, `onnx`.
    origin: str
    obs_normalization: ObsNormalization | None = None
    # The observation bounds the file declares (SB3 zips do), for checking against the model's spaces.
    observation_low: tuple[float | None, ...] | None = None
    observation_high: tuple[float | None, ...] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    def forward(self, observations: npt.ArrayLike) -> FloatArray:
        """The deterministic action, float32, for one observation or a batch (the reference the tests use)."""
        x = np.asarray(observations, dtype=np.float32)
        if self.obs_normalization is not None:
            x = self.obs_normalization.apply(x)
        for layer in self.layers:
            x = x @ layer.weight.T + layer.bias
            x = activate(x, layer.activation)
        if self.output_transform == "tanh_scale":
            x = self.action_low + (np.tanh(x) + 1.0) * np.float32(0.5) * (self.action_high - self.action_low)
        return np.clip(x, self.action_low, self.action_high).astype(np.float32)


def activate(x: FloatArray, activation: Activation) -> FloatArray:
    if activation == "relu":
        return np.maximum(x, 0.0)
    if activation == "tanh":
        return np.tanh(x)
    if activation == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))).astype(np.float32)
    if activation == "leaky_relu":
        return np.where(x > 0, x, x * np.float32(LEAKY_RELU_SLOPE)).astype(np.float32)
    return x


def build_mlp(
    layers: list[DenseLayer],
    *,
    output_transform: OutputTransform,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    origin: str,
    obs_normalization: ObsNormalization | None = None,
    observation_low: tuple[float | None, ...] | None = None,
    observation_high: tuple[float | None, ...] | None = None,
    field_name: str = "file",
) -> ImportedMlp:
    """An ImportedMlp after every check a served actor needs; ImportRefusedError naming `field_name` otherwise."""
    if not layers:
        raise ImportRefusedError(field_name, "the network has no layers")
    if len(layers) > MAX_LAYERS:
        raise ImportRefusedError(field_name, f"the network has {len(layers)} layers; at most {MAX_LAYERS} are served")
    checked: list[DenseLayer] = []
    width: int | None = None
    for index, layer in enumerate(layers):
        weight = np.ascontiguousarray(layer.weight, dtype=np.float32)
        bias = np.ascontiguousarray(layer.bias, dtype=np.float32)
        where = f"layer {index}"
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ImportRefusedError(
                field_name, f"{where} has weight {list(weight.shape)} and bias {list(bias.shape)}; not a dense layer"
            )
        if max(weight.shape) > MAX_DIM or min(weight.shape) < 1:
            raise ImportRefusedError(field_name, f"{where} has shape {list(weight.shape)}; sizes 1..{MAX_DIM} served")
        if width is not None and weight.shape[1] != width:
            raise ImportRefusedError(
                field_name, f"{where} takes {weight.shape[1]} inputs but the layer before gives {width}"
            )
        if layer.activation not in ACTIVATIONS:
            raise ImportRefusedError(field_name, f"{where} has activation {layer.activation!r}")
        for name, array in (("weight", weight), ("bias", bias)):
            if not np.all(np.isfinite(array)):
                raise ImportRefusedError(field_name, f"{where} {name} holds non-finite values (NaN or infinity)")
        checked.append(DenseLayer(weight, bias, layer.activation))
        width = int(weight.shape[0])
    act_dim = int(checked[-1].weight.shape[0])
    low = _bounds(action_low, act_dim, "action_low", field_name)
    high = _bounds(action_high, act_dim, "action_high", field_name)
    if not np.all(low < high):
        raise ImportRefusedError(field_name, "the action bounds must have low strictly below high")
    if obs_normalization is not None:
        obs_dim = int(checked[0].weight.shape[1])
        obs_normalization = check_normalization(obs_normalization, obs_dim)
    return ImportedMlp(
        layers=tuple(checked),
        output_transform=output_transform,
        action_low=low,
        action_high=high,
        origin=origin,
        obs_normalization=obs_normalization,
        observation_low=observation_low,
        observation_high=observation_high,
    )


def check_normalization(normalization: ObsNormalization, obs_dim: int) -> ObsNormalization:
    """The statistics checked against the network's input size: shapes, finite, var >= 0, clip and epsilon > 0."""
    field_name = "obs_normalization"
    mean = np.asarray(normalization.mean, dtype=np.float32).ravel()
    var = np.asarray(normalization.var, dtype=np.float32).ravel()
    for name, array in (("mean", mean), ("var", var)):
        if array.shape != (obs_dim,):
            raise ImportRefusedError(
                f"{field_name}.{name}", f"has {array.size} values but the policy takes {obs_dim} observations"
            )
        if not np.all(np.isfinite(array)):
            raise ImportRefusedError(f"{field_name}.{name}", "holds non-finite values (NaN or infinity)")
    if np.any(var < 0):
        raise ImportRefusedError(f"{field_name}.var", "variances must not be negative")
    if not (math.isfinite(normalization.clip) and normalization.clip > 0):
        raise ImportRefusedError(f"{field_name}.clip", f"must be a positive number, got {normalization.clip}")
    if not (math.isfinite(normalization.epsilon) and normalization.epsilon > 0):
        raise ImportRefusedError(f"{field_name}.epsilon", f"must be a positive number, got {normalization.epsilon}")
    return ObsNormalization(mean, var, float(normalization.clip), float(normalization.epsilon))


def _bounds(values: npt.ArrayLike, act_dim: int, name: str, field_name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float32).ravel()
    if array.shape != (act_dim,):
        raise ImportRefusedError(field_name, f"{name} has {array.size} values but the network gives {act_dim} actions")
    if not np.all(np.isfinite(array)):
        raise ImportRefusedError(field_name, f"{name} must be finite; the served action is bounded")
    return array
