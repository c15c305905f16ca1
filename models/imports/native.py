"""An imported MLP as the service's own weights file (`policy-mlp/1`): where the importers' neutral description
meets the stored format (`models.policy_format`), with its origin (`sb3:TD3 2.3.2`, `cleanrl`, `onnx`), which
GET /policies/{id} shows; a trained policy's is `trained`."""

from __future__ import annotations

from typing import Any

from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp
from models.policy_format import encode_policy
from models.policy_validation import build_policy_weights
from models.strict_safetensors import WeightsFormatError


def encode_imported(mlp: ImportedMlp, *, env_id: str, source_name: str | None = None) -> bytes:
    """The stored `policy-mlp/1` bytes for an imported actor (validated by the strict loader on the way out)."""
    config: dict[str, Any] = {} if not source_name else {"source_file": source_name[:200]}
    try:
        weights = build_policy_weights(
            mlp.layers,
            output=mlp.output_transform,
            action_low=mlp.action_low,
            action_high=mlp.action_high,
            obs_normalization=mlp.obs_normalization,
            env_id=env_id,
            origin=mlp.origin,
            config=config,
        )
        return encode_policy(weights)
    except WeightsFormatError as exc:
        raise ImportRefusedError("file", str(exc)) from None
