"""An imported MLP as the service's own weights file: the one place the neutral description meets the stored format.

The file records where the policy came from (`origin` in its config: `sb3:TD3 2.3.2`, `cleanrl`, `onnx`), which
GET /policies/{id} shows; a trained policy has none and shows `trained`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp
from models.weights import encode_actor

ORIGIN_KEY = "origin"
TRAINED_ORIGIN = "trained"


def origin_of(meta: dict[str, Any]) -> str:
    """Where a stored policy came from, from its metadata: an importer's origin, else `trained`."""
    for source in (meta, meta.get("config")):
        if isinstance(source, dict) and isinstance(source.get(ORIGIN_KEY), str):
            return str(source[ORIGIN_KEY])
    return TRAINED_ORIGIN


def encode_imported(mlp: ImportedMlp, *, env_id: str, source_name: str | None = None) -> bytes:
    """The stored weights bytes for an imported actor (validated by the strict loader before they are returned)."""
    config: dict[str, Any] = {ORIGIN_KEY: mlp.origin}
    if source_name:
        config["source_file"] = source_name[:200]
    created_at = datetime.now(UTC).isoformat()
    return _encode_three_layer(mlp, env_id=env_id, config=config, created_at=created_at)


def _encode_three_layer(mlp: ImportedMlp, *, env_id: str, config: dict[str, Any], created_at: str) -> bytes:
    """`ddpg-actor/1`: two equal ReLU layers and a tanh-scaled output, no observation normalization."""
    activations = [layer.activation for layer in mlp.layers]
    widths = {int(layer.weight.shape[0]) for layer in mlp.layers[:-1]}
    fits = (
        activations == ["relu", "relu", "identity"]
        and len(widths) == 1
        and mlp.output_transform == "tanh_scale"
        and mlp.obs_normalization is None
    )
    if not fits:
        raise ImportRefusedError(
            "file",
            f"a {len(mlp.layers)}-layer {'/'.join(activations)} network with {mlp.output_transform} output"
            f"{' and observation normalization' if mlp.obs_normalization is not None else ''} "
            "cannot be stored in the ddpg-actor/1 format",
        )
    tensors = {}
    for index, layer in enumerate(mlp.layers, start=1):
        tensors[f"linear{index}.weight"] = np.asarray(layer.weight, np.float32)
        tensors[f"linear{index}.bias"] = np.asarray(layer.bias, np.float32)
    return encode_actor(
        tensors,
        env_id=env_id,
        action_low=mlp.action_low,
        action_high=mlp.action_high,
        config=config,
        seed=None,
        eval_mean_return=None,
        created_at=created_at,
    )
