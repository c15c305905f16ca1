"""What every importer produces: an MLP actor in the general policy form (`models.policy_format`), with where it came
from and the observation bounds its file declares, checked with errors that name the uploaded file's part at fault.

    observation -> [clip((obs - mean) / sqrt(var + epsilon), -clip, clip)]     # with VecNormalize's statistics
      -> each hidden layer: activation(x @ weight.T + bias); the last layer: x @ weight.T + bias
      -> tanh_scale: low + (tanh(x) + 1) / 2 * (high - low)  |  clip: clip(x, low, high)

This is what `model.predict(obs, deterministic=True)` computes for the SB3 policies we import (TD3/DDPG/SAC:
tanh_scale; PPO/A2C: clip), what a CleanRL actor computes, and what the supported ONNX graphs compute. It becomes
the stored weights in one place (`models.imports.native`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.imports.errors import ImportRefusedError
from models.policy_types import Activation, DenseLayer, ObsNormalization, OutputTransform
from models.strict_safetensors import MAX_DIM, MAX_LAYERS, WeightsFormatError

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
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

    @property
    def obs_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def act_dim(self) -> int:
        return self.layers[-1].out_features


def dense(weight: npt.ArrayLike, bias: npt.ArrayLike, activation: Activation | str | None, field: str) -> DenseLayer:
    """One layer in the general form; ImportRefusedError naming `field` for arrays that are not numbers."""
    try:
        return DenseLayer(np.asarray(weight), np.asarray(bias), None if activation is None else Activation(activation))
    except (WeightsFormatError, ValueError, TypeError) as exc:
        raise ImportRefusedError(field, str(exc)) from None


def build_mlp(
    layers: list[DenseLayer],
    *,
    output_transform: OutputTransform | str,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    origin: str,
    obs_normalization: ObsNormalization | None = None,
    observation_low: tuple[float | None, ...] | None = None,
    observation_high: tuple[float | None, ...] | None = None,
    field_name: str = "file",
) -> ImportedMlp:
    """An ImportedMlp after every check a served actor needs; ImportRefusedError naming `field_name` otherwise.

    The stored format checks all of this again (`build_policy_weights`); here the messages name the upload's parts.
    """
    if not layers:
        raise ImportRefusedError(field_name, "the network has no layers")
    if len(layers) > MAX_LAYERS:
        raise ImportRefusedError(field_name, f"the network has {len(layers)} layers; at most {MAX_LAYERS} are served")
    width: int | None = None
    for index, layer in enumerate(layers):
        weight, bias = layer.weight, layer.bias
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
        last = index == len(layers) - 1
        if last != (layer.activation is None):
            problem = "an activation after the output layer" if last else "no activation (two linear layers in a row)"
            raise ImportRefusedError(field_name, f"{where} has {problem}")
        for name, array in (("weight", weight), ("bias", bias)):
            if not np.all(np.isfinite(array)):
                raise ImportRefusedError(field_name, f"{where} {name} holds non-finite values (NaN or infinity)")
        width = int(weight.shape[0])
    act_dim = layers[-1].out_features
    low = _bounds(action_low, act_dim, "action_low", field_name)
    high = _bounds(action_high, act_dim, "action_high", field_name)
    if not np.all(low < high):
        raise ImportRefusedError(field_name, "the action bounds must have low strictly below high")
    if obs_normalization is not None and obs_normalization.obs_dim != layers[0].in_features:
        raise ImportRefusedError(
            "obs_normalization.mean",
            f"has {obs_normalization.obs_dim} values but the policy takes {layers[0].in_features} observations",
        )
    return ImportedMlp(
        layers=tuple(layers),
        output_transform=OutputTransform(output_transform),
        action_low=low,
        action_high=high,
        origin=origin,
        obs_normalization=obs_normalization,
        observation_low=observation_low,
        observation_high=observation_high,
    )


def _bounds(values: npt.ArrayLike, act_dim: int, name: str, field_name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float32).ravel()
    if array.shape != (act_dim,):
        raise ImportRefusedError(field_name, f"{name} has {array.size} values but the network gives {act_dim} actions")
    if not np.all(np.isfinite(array)):
        raise ImportRefusedError(field_name, f"{name} must be finite; the served action is bounded")
    return array
