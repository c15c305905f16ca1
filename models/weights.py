"""The policy weights files and their strict loader: `ddpg-actor/1` (the seed Actor) and `policy-mlp/1` (any MLP).

Torch-free on purpose: the API reads these bytes with numpy only. Nothing here ever unpickles.

`decode_actor` reads every format into one general form, `ActorWeights` (models.policy_types, where that form is
described; its builder is in models.policy_validation; their public names are re-exported here). `encode_actor`
writes `ddpg-actor/1`, the trainer's format for an unnormalized seed Actor, so its files stay readable by every
earlier server; `encode_policy` writes `policy-mlp/1`.

`ddpg-actor/1` layout (see DESIGN.md): tensors `linear{1,2,3}.{weight,bias}` with the torch `nn.Linear` shapes,
relu, relu, tanh, metadata values are strings (lists and dicts JSON-encoded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save as st_save

from models.policy_format import decode_policy_mlp, encode_policy
from models.policy_types import (
    LEGACY_FORMAT_TAG,
    ORIGIN_TRAINED,
    POLICY_FORMAT_TAG,
    Activation,
    ActorWeights,
    DenseLayer,
    ObsNormalization,
    OutputTransform,
)
from models.policy_validation import build_policy_weights, legacy_actor_weights
from models.strict_safetensors import (
    MAX_DIM,
    MAX_HEADER_BYTES,
    WeightsFormatError,
    check_declared_tensors,
    float_vector,
    json_value,
    load_tensors,
    optional_float,
    optional_int,
    positive_int,
    read_header,
)

__all__ = [
    "FORMAT_TAG",
    "LEGACY_FORMAT_TAG",
    "MAX_DIM",
    "MAX_HEADER_BYTES",
    "ORIGIN_TRAINED",
    "POLICY_FORMAT_TAG",
    "REQUIRED_METADATA",
    "SUPPORTED_FORMATS",
    "TENSOR_NAMES",
    "Activation",
    "ActorWeights",
    "DenseLayer",
    "ObsNormalization",
    "OutputTransform",
    "WeightsFormatError",
    "build_policy_weights",
    "decode_actor",
    "encode_actor",
    "encode_policy",
    "load_actor_file",
    "read_header",
]

FORMAT_TAG = LEGACY_FORMAT_TAG  # the name earlier code imports
SUPPORTED_FORMATS = (LEGACY_FORMAT_TAG, POLICY_FORMAT_TAG)
LAYER_NAMES = ("linear1", "linear2", "linear3")
TENSOR_NAMES = tuple(f"{layer}.{part}" for layer in LAYER_NAMES for part in ("weight", "bias"))
REQUIRED_METADATA = (
    "format",
    "env_id",
    "obs_dim",
    "act_dim",
    "hidden_size",
    "action_low",
    "action_high",
    "config",
    "seed",
    "eval_mean_return",
    "created_at",
)

FloatArray = npt.NDArray[np.float32]


def encode_actor(
    tensors: Mapping[str, npt.ArrayLike],
    *,
    env_id: str,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    config: Mapping[str, Any],
    seed: int | None,
    eval_mean_return: float | None,
    created_at: str,
) -> bytes:
    """Serialise an actor's state_dict (as numpy arrays) into `ddpg-actor/1` bytes.

    The result is run through the strict decoder, so an invalid actor never leaves this function.
    """
    arrays = {name: np.ascontiguousarray(np.asarray(tensors[name], dtype=np.float32)) for name in TENSOR_NAMES}
    obs_dim = int(arrays["linear1.weight"].shape[1])
    hidden_size = int(arrays["linear1.weight"].shape[0])
    act_dim = int(arrays["linear3.weight"].shape[0])
    metadata = {
        "format": FORMAT_TAG,
        "env_id": env_id,
        "obs_dim": str(obs_dim),
        "act_dim": str(act_dim),
        "hidden_size": str(hidden_size),
        "action_low": json.dumps([float(v) for v in np.asarray(action_low, dtype=np.float64).ravel()]),
        "action_high": json.dumps([float(v) for v in np.asarray(action_high, dtype=np.float64).ravel()]),
        "config": json.dumps(dict(config), sort_keys=True),
        "seed": "" if seed is None else str(seed),
        "eval_mean_return": "" if eval_mean_return is None else repr(float(eval_mean_return)),
        "created_at": created_at,
    }
    data = st_save(arrays, metadata=metadata)
    decode_actor(data)
    return data


def decode_actor(data: bytes) -> ActorWeights:
    """Strictly validate and load a policy file of any supported format; WeightsFormatError names the problem."""
    header = read_header(data)
    raw_meta = header.get("__metadata__")
    if not isinstance(raw_meta, dict):
        raise WeightsFormatError(f"safetensors file has no metadata; expected a format among {list(SUPPORTED_FORMATS)}")
    tag = raw_meta.get("format")
    if tag == POLICY_FORMAT_TAG:
        return decode_policy_mlp(data)
    if tag is not None and tag != LEGACY_FORMAT_TAG:
        # Before any key check: a later format's file must be told apart from a broken one.
        raise WeightsFormatError(
            f"unsupported format {tag!r}; expected one of {', '.join(map(repr, SUPPORTED_FORMATS))}"
        )
    return _decode_ddpg_actor(header, raw_meta, data)


def _decode_ddpg_actor(header: Mapping[str, Any], raw_meta: Mapping[str, Any], data: bytes) -> ActorWeights:
    """`ddpg-actor/1`: the checks it always had, in their order, then the general form."""
    missing = [key for key in REQUIRED_METADATA if key not in raw_meta]
    if missing:
        raise WeightsFormatError(f"metadata lacks required keys: {', '.join(missing)}")
    if raw_meta["format"] != FORMAT_TAG:
        raise WeightsFormatError(
            f"unsupported format {raw_meta['format']!r}; expected one of {', '.join(map(repr, SUPPORTED_FORMATS))}"
        )

    obs_dim = positive_int(raw_meta, "obs_dim")
    act_dim = positive_int(raw_meta, "act_dim")
    hidden_size = positive_int(raw_meta, "hidden_size")
    action_low = float_vector(raw_meta, "action_low", act_dim)
    action_high = float_vector(raw_meta, "action_high", act_dim)
    if not np.all(action_low < action_high):
        raise WeightsFormatError("metadata action_low must be strictly below action_high")
    config = json_value(raw_meta, "config")
    if not isinstance(config, dict):
        raise WeightsFormatError("metadata 'config' must be a JSON object")

    check_declared_tensors(
        header,
        {
            "linear1.weight": (hidden_size, obs_dim),
            "linear1.bias": (hidden_size,),
            "linear2.weight": (hidden_size, hidden_size),
            "linear2.bias": (hidden_size,),
            "linear3.weight": (act_dim, hidden_size),
            "linear3.bias": (act_dim,),
        },
    )
    tensors = load_tensors(data)
    return legacy_actor_weights(
        [
            DenseLayer(tensors["linear1.weight"], tensors["linear1.bias"], Activation.RELU),
            DenseLayer(tensors["linear2.weight"], tensors["linear2.bias"], Activation.RELU),
            DenseLayer(tensors["linear3.weight"], tensors["linear3.bias"], None),
        ],
        action_low=action_low,
        action_high=action_high,
        env_id=str(raw_meta["env_id"]),
        config=config,
        seed=optional_int(raw_meta, "seed"),
        eval_mean_return=optional_float(raw_meta, "eval_mean_return"),
        created_at=str(raw_meta["created_at"]),
    )


def load_actor_file(path: str | Path) -> ActorWeights:
    """Read and strictly validate an actor file from disk."""
    file = Path(path)
    if not file.is_file():
        raise WeightsFormatError(f"no such weights file: {file}")
    return decode_actor(file.read_bytes())
