"""An imported MLP as the service's own weights file (`policy-mlp/1`): where the importers' neutral description
meets the stored format (`models.policy_format`), with its origin (`sb3:TD3 2.3.2`, `cleanrl`, `onnx`), which
GET /policies/{id} shows; a trained policy's is `trained`."""

from __future__ import annotations

from typing import Any

from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp
from models.policy_format import (
    ORIGIN_TRAINED,
    Activation,
    DenseLayer,
    ObsNormalization,
    OutputTransform,
    WeightsFormatError,
    build_policy_weights,
    encode_policy,
)

ORIGIN_KEY = "origin"


def origin_of(meta: dict[str, Any]) -> str:
    """Where a stored policy came from, from its metadata (`ddpg-actor/1` files have none: `trained`)."""
    origin = meta.get(ORIGIN_KEY)
    return origin if isinstance(origin, str) else ORIGIN_TRAINED


def encode_imported(mlp: ImportedMlp, *, env_id: str, source_name: str | None = None) -> bytes:
    """The stored `policy-mlp/1` bytes for an imported actor (validated by the strict loader on the way out)."""
    layers = []
    for index, layer in enumerate(mlp.layers):
        last = index == len(mlp.layers) - 1
        if not last and layer.activation == "identity":
            raise ImportRefusedError("file", f"layer {index} has no activation; two linear layers in a row")
        activation = None if last else Activation(layer.activation)
        if last and layer.activation != "identity":
            # An activation after the last layer (an ONNX graph ending in Tanh and no scale): no format says that.
            raise ImportRefusedError("file", f"the last layer ends in {layer.activation}; scale or clip it instead")
        layers.append(DenseLayer(layer.weight, layer.bias, activation))
    norm = mlp.obs_normalization
    config: dict[str, Any] = {} if not source_name else {"source_file": source_name[:200]}
    try:
        weights = build_policy_weights(
            layers,
            output=OutputTransform(mlp.output_transform),
            action_low=mlp.action_low,
            action_high=mlp.action_high,
            obs_normalization=None
            if norm is None
            else ObsNormalization(norm.mean, norm.var, clip=norm.clip, epsilon=norm.epsilon),
            env_id=env_id,
            origin=mlp.origin,
            config=config,
        )
        return encode_policy(weights)
    except WeightsFormatError as exc:
        raise ImportRefusedError("file", str(exc)) from None
