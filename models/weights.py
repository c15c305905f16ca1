"""The actor weights file: safetensors with string metadata (format `ddpg-actor/1`), and its strict loader.

Torch-free on purpose: the API reads these bytes with numpy only. Nothing here ever unpickles.

Layout (see DESIGN.md): tensors `linear{1,2,3}.{weight,bias}` with the torch `nn.Linear` shapes,
metadata values are strings (lists and dicts JSON-encoded).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

FORMAT_TAG = "ddpg-actor/1"
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
# A header larger than this is not an actor file; refusing early keeps a hostile upload from
# making us parse megabytes of JSON.
MAX_HEADER_BYTES = 1 << 20
# Caps the network size a file may claim, so a hostile upload cannot make us allocate gigabytes.
MAX_DIM = 65536

FloatArray = npt.NDArray[np.float32]


class WeightsFormatError(ValueError):
    """The bytes are not a valid `ddpg-actor/1` safetensors file; the message says why."""


@dataclass(frozen=True)
class ActorWeights:
    """A validated actor: float32 tensors with the torch shapes, and the parsed metadata."""

    tensors: dict[str, FloatArray]
    env_id: str
    obs_dim: int
    act_dim: int
    hidden_size: int
    action_low: FloatArray
    action_high: FloatArray
    config: dict[str, Any]
    seed: int | None
    eval_mean_return: float | None
    created_at: str

    def metadata(self) -> dict[str, Any]:
        """The metadata as plain JSON-able values (for the registry and the API)."""
        return {
            "format": FORMAT_TAG,
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


def read_header(data: bytes) -> dict[str, Any]:
    """Parse the safetensors JSON header without touching the tensor bytes."""
    if len(data) < 8:
        raise WeightsFormatError(f"not a safetensors file: {len(data)} bytes is shorter than the 8-byte header size")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len == 0 or header_len > MAX_HEADER_BYTES:
        raise WeightsFormatError(f"not a safetensors file: implausible header size {header_len}")
    if 8 + header_len > len(data):
        raise WeightsFormatError(
            f"truncated safetensors file: header claims {header_len} bytes but only {len(data) - 8} follow"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFormatError(f"not a safetensors file: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WeightsFormatError("not a safetensors file: header is not a JSON object")
    return header


def decode_actor(data: bytes) -> ActorWeights:
    """Strictly validate and load `ddpg-actor/1` bytes; raise WeightsFormatError naming the problem."""
    header = read_header(data)
    raw_meta = header.get("__metadata__")
    if not isinstance(raw_meta, dict):
        raise WeightsFormatError("safetensors file has no metadata; expected format 'ddpg-actor/1'")
    missing = [key for key in REQUIRED_METADATA if key not in raw_meta]
    if missing:
        raise WeightsFormatError(f"metadata lacks required keys: {', '.join(missing)}")
    if raw_meta["format"] != FORMAT_TAG:
        raise WeightsFormatError(f"unsupported format {raw_meta['format']!r}; expected {FORMAT_TAG!r}")

    obs_dim = _positive_int(raw_meta, "obs_dim")
    act_dim = _positive_int(raw_meta, "act_dim")
    hidden_size = _positive_int(raw_meta, "hidden_size")
    action_low = _float_vector(raw_meta, "action_low", act_dim)
    action_high = _float_vector(raw_meta, "action_high", act_dim)
    if not np.all(action_low < action_high):
        raise WeightsFormatError("metadata action_low must be strictly below action_high")
    config = _json_value(raw_meta, "config")
    if not isinstance(config, dict):
        raise WeightsFormatError("metadata 'config' must be a JSON object")

    expected_shapes = {
        "linear1.weight": (hidden_size, obs_dim),
        "linear1.bias": (hidden_size,),
        "linear2.weight": (hidden_size, hidden_size),
        "linear2.bias": (hidden_size,),
        "linear3.weight": (act_dim, hidden_size),
        "linear3.bias": (act_dim,),
    }
    names = sorted(key for key in header if key != "__metadata__")
    if names != sorted(TENSOR_NAMES):
        raise WeightsFormatError(f"expected tensors {sorted(TENSOR_NAMES)}, found {names}")
    for name, shape in expected_shapes.items():
        declared = header[name].get("shape") if isinstance(header[name], dict) else None
        if declared != list(shape):
            raise WeightsFormatError(f"tensor {name} has shape {declared}, expected {list(shape)}")
        dtype = header[name].get("dtype")
        if dtype not in ("F16", "F32", "F64"):
            raise WeightsFormatError(f"tensor {name} has dtype {dtype}; expected a float (F16, F32 or F64)")

    try:
        loaded = st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise WeightsFormatError(f"corrupt safetensors file: {exc}") from None

    tensors: dict[str, FloatArray] = {}
    for name in TENSOR_NAMES:
        array = np.ascontiguousarray(loaded[name], dtype=np.float32)
        if not np.all(np.isfinite(array)):
            raise WeightsFormatError(f"tensor {name} holds non-finite values (NaN or infinity)")
        tensors[name] = array

    return ActorWeights(
        tensors=tensors,
        env_id=str(raw_meta["env_id"]),
        obs_dim=obs_dim,
        act_dim=act_dim,
        hidden_size=hidden_size,
        action_low=action_low,
        action_high=action_high,
        config=config,
        seed=_optional_int(raw_meta, "seed"),
        eval_mean_return=_optional_float(raw_meta, "eval_mean_return"),
        created_at=str(raw_meta["created_at"]),
    )


def load_actor_file(path: str | Path) -> ActorWeights:
    """Read and strictly validate an actor file from disk."""
    file = Path(path)
    if not file.is_file():
        raise WeightsFormatError(f"no such weights file: {file}")
    return decode_actor(file.read_bytes())


def _positive_int(meta: Mapping[str, Any], key: str) -> int:
    try:
        value = int(meta[key])
    except (TypeError, ValueError):
        raise WeightsFormatError(f"metadata {key!r} must be an integer, got {meta[key]!r}") from None
    if not 0 < value <= MAX_DIM:
        raise WeightsFormatError(f"metadata {key!r} must be between 1 and {MAX_DIM}, got {value}")
    return value


def _json_value(meta: Mapping[str, Any], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (TypeError, json.JSONDecodeError):
        raise WeightsFormatError(f"metadata {key!r} must be JSON, got {meta[key]!r}") from None


def _float_vector(meta: Mapping[str, Any], key: str, length: int) -> FloatArray:
    value = _json_value(meta, key)
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise WeightsFormatError(f"metadata {key!r} must be a list of {length} finite numbers, got {meta[key]!r}")
    return np.asarray(value, dtype=np.float32)


def _optional_int(meta: Mapping[str, Any], key: str) -> int | None:
    raw = meta[key]
    if raw in ("", "null", None):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise WeightsFormatError(f"metadata {key!r} must be an integer or empty, got {raw!r}") from None


def _optional_float(meta: Mapping[str, Any], key: str) -> float | None:
    raw = meta[key]
    if raw in ("", "null", None):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise WeightsFormatError(f"metadata {key!r} must be a number or empty, got {raw!r}") from None
    if not math.isfinite(value):
        raise WeightsFormatError(f"metadata {key!r} must be finite, got {raw!r}")
    return value
