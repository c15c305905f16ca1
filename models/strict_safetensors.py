"""Strict reading of safetensors policy files: the header, the declared tensors and the metadata values.

Shared by every policy file format (`ddpg-actor/1` in models.weights, `policy-mlp/1` in models.policy_format).
Numpy only, and nothing here ever unpickles. Every refusal is a `WeightsFormatError` naming the tensor or field
at fault, and the size limits below are checked before anything large is allocated.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

FloatArray = npt.NDArray[np.float32]

# A header larger than this is not a policy file; refusing early keeps a hostile upload from making us parse
# megabytes of JSON.
MAX_HEADER_BYTES = 1 << 20
# Caps on what a file may claim, so a hostile upload cannot make us allocate gigabytes.
MAX_DIM = 65536
MAX_LAYERS = 32
MAX_PARAMETERS = 1 << 26  # 64 Mi floats: 256 MiB of float32, far beyond any MLP policy


class WeightsFormatError(ValueError):
    """The bytes or arrays are not a valid policy; the message names the tensor or field and says why."""


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


# safetensors aligns the tensor data that follows the header to 8 bytes.
_HEADER_ALIGNMENT = 8


def canonical_safetensors(data: bytes) -> bytes:
    """Rewrite the JSON header with sorted keys; the tensor bytes are untouched.

    safetensors writes its header (metadata included) from a hash map, whose order changes from process to
    process. Offsets in the header are relative to the data section, so reordering is safe.
    """
    (header_len,) = struct.unpack("<Q", data[:8])
    header = read_header(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % _HEADER_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + data[8 + header_len :]


def check_declared_tensors(header: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> None:
    """The header lists exactly the expected tensors, with those shapes and a float dtype."""
    names = sorted(key for key in header if key != "__metadata__")
    if names != sorted(expected):
        raise WeightsFormatError(f"expected tensors {sorted(expected)}, found {names}")
    for name, shape in expected.items():
        declared = header[name].get("shape") if isinstance(header[name], dict) else None
        if declared != list(shape):
            raise WeightsFormatError(f"tensor {name} has shape {declared}, expected {list(shape)}")
        dtype = header[name].get("dtype")
        if dtype not in ("F16", "F32", "F64"):
            raise WeightsFormatError(f"tensor {name} has dtype {dtype}; expected a float (F16, F32 or F64)")


def load_tensors(data: bytes) -> dict[str, FloatArray]:
    """Every tensor as contiguous float32 (after the header was checked), NaN and infinity refused by name."""
    try:
        loaded = st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise WeightsFormatError(f"corrupt safetensors file: {exc}") from None
    tensors: dict[str, FloatArray] = {}
    for name in sorted(loaded):
        array = np.ascontiguousarray(loaded[name], dtype=np.float32)
        require_finite(array, name)
        tensors[name] = array
    return tensors


def positive_int(meta: Mapping[str, Any], key: str) -> int:
    try:
        value = int(meta[key])
    except (TypeError, ValueError):
        raise WeightsFormatError(f"metadata {key!r} must be an integer, got {meta[key]!r}") from None
    if not 0 < value <= MAX_DIM:
        raise WeightsFormatError(f"metadata {key!r} must be between 1 and {MAX_DIM}, got {value}")
    return value


def json_value(meta: Mapping[str, Any], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (TypeError, json.JSONDecodeError):
        raise WeightsFormatError(f"metadata {key!r} must be JSON, got {meta[key]!r}") from None


def float_vector(meta: Mapping[str, Any], key: str, length: int) -> FloatArray:
    value = json_value(meta, key)
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise WeightsFormatError(f"metadata {key!r} must be a list of {length} finite numbers, got {meta[key]!r}")
    return np.asarray(value, dtype=np.float32)


def optional_int(meta: Mapping[str, Any], key: str) -> int | None:
    raw = meta[key]
    if raw in ("", "null", None):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise WeightsFormatError(f"metadata {key!r} must be an integer or empty, got {raw!r}") from None


def optional_float(meta: Mapping[str, Any], key: str) -> float | None:
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


def float32_array(value: npt.ArrayLike) -> FloatArray:
    """The value as a contiguous float32 array (no copy when it already is one)."""
    try:
        return np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise WeightsFormatError(f"expected an array of numbers: {exc}") from None


def require_finite(array: FloatArray, name: str) -> None:
    """NaN and infinity refused, naming the tensor."""
    if not np.all(np.isfinite(array)):
        raise WeightsFormatError(f"tensor {name} holds non-finite values (NaN or infinity)")


def finite_number(value: object, name: str) -> float:
    """A finite real number as a float; booleans, strings and NaN refused, naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise WeightsFormatError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise WeightsFormatError(f"{name} must be finite, got {value!r}")
    return number
