"""Parse a POST /act body straight from bytes into a float32 array, with 422 errors that name the field.

This is the hot path (issue 5), so it does not go through pydantic: orjson parses, numpy infers the shape
and dtype of the nested lists in C, and only when that fast check fails do we walk the input in Python to
say exactly which element is wrong. The documented schema of the same body is `schemas.ActRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.infra.errors import ApiError, field_error

FloatArray = npt.NDArray[np.float32]

_ALLOWED_KEYS = frozenset({"observation", "observations", "policy_id"})
# Ids are 32-bit integers in PostgreSQL; a bigger one is a bad request, not a database error.
MAX_ID = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Integers up to 2**24 are exact in float32, so converting them cannot round differently from the general path.
_EXACT_INT = 2**24


@dataclass(frozen=True, slots=True)
class ActInput:
    """A validated /act request: observations as float32 (obs,) or (n, obs); obs_dim is checked later."""

    observations: FloatArray
    batched: bool
    policy_id: int | None
    # Plain ints, not properties of the array: /act reads both on every request.
    count: int
    obs_dim: int


def parse_act_body(body: bytes, max_batch: int) -> ActInput:
    """Validate the JSON body of POST /act; raise ApiError(422) naming the field and the problem."""
    if not body:
        raise field_error("body", "a JSON request body is required")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            422,
            "validation_error",
            "body: not valid JSON (NaN and Infinity are not JSON numbers)",
            details=[{"field": "body", "message": f"not valid JSON: {exc}", "type": "json_invalid"}],
        ) from None
    if type(payload) is not dict:
        raise field_error("body", "must be a JSON object with `observation` or `observations`")
    unknown = payload.keys() - _ALLOWED_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise field_error(name, "unknown field; expected `observation`, `observations` and optionally `policy_id`")

    policy_id = payload.get("policy_id")
    if policy_id is not None and (type(policy_id) is not int or policy_id < 1):
        raise field_error("policy_id", "must be a positive integer")
    if policy_id is not None and policy_id > MAX_ID:
        raise field_error("policy_id", f"must be at most {MAX_ID}")

    # An explicit null is the same as an absent field (the documented schema says both are nullable).
    has_one, has_batch = payload.get("observation") is not None, payload.get("observations") is not None
    if has_one and has_batch:
        raise field_error("observations", "give either `observation` or `observations`, not both")
    if has_one:
        value = payload["observation"]
        if type(value) is not list or not value:
            raise field_error("observation", "must be a non-empty list of numbers")
        return ActInput(_to_float32(value, "observation", 1, body), False, policy_id, 1, len(value))
    if has_batch:
        value = payload["observations"]
        if type(value) is not list:
            raise field_error("observations", "must be a list of observations (lists of numbers)")
        if not value:
            raise field_error("observations", "must contain at least one observation")
        if len(value) > max_batch:
            raise field_error("observations", f"at most {max_batch} observations per request, got {len(value)}")
        batch = _to_float32(value, "observations", 2, body)
        count, obs_dim = batch.shape
        return ActInput(batch, True, policy_id, count, obs_dim)
    raise field_error("observation", "one of `observation` or `observations` is required")


def _to_float32(value: list[Any], field: str, ndim: int, body: bytes) -> FloatArray:
    if ndim == 1 and all(
        (type(x) is float and -_FLOAT32_MAX <= x <= _FLOAT32_MAX) or (type(x) is int and -_EXACT_INT <= x <= _EXACT_INT)
        for x in value
    ):
        # One observation of plain numbers within float32 range: a few Python comparisons are cheaper than numpy's
        # inference, cast and finiteness check (several microseconds on the hot path), with the same result.
        return np.array(value, dtype=np.float32)
    # `true`/`false` would pass numpy's numeric inference as 1/0; only look closer when they appear at all.
    if b"true" not in body and b"false" not in body:
        try:
            inferred = np.asarray(value)
        except (ValueError, OverflowError):  # ragged nesting, or an integer too large for int64
            inferred = None
        if inferred is not None and inferred.ndim == ndim and inferred.dtype.kind in "fi" and inferred.size:
            # Finite in float64 but beyond float32's range becomes infinity here (silently: the slow path names it).
            with np.errstate(over="ignore"):
                array: FloatArray = inferred.astype(np.float32)
            if np.isfinite(array).all():
                return array
    raise _describe_problem(value, field, ndim)


def _describe_problem(value: list[Any], field: str, ndim: int) -> ApiError:
    """The slow path: walk the input to name the first bad element (only reached for invalid requests)."""
    rows: list[tuple[str, Any]] = [(field, value)] if ndim == 1 else [(f"{field}[{i}]", r) for i, r in enumerate(value)]
    expected_len: int | None = None
    for name, row in rows:
        if type(row) is not list:
            return field_error(name, f"must be a list of numbers, got {_json_type(row)}")
        if not row:
            return field_error(name, "must be a non-empty list of numbers")
        if expected_len is None:
            expected_len = len(row)
        elif len(row) != expected_len:
            return field_error(name, f"has {len(row)} numbers but {field}[0] has {expected_len}; all must be equal")
        for j, x in enumerate(row):
            if type(x) is not float and type(x) is not int:
                return field_error(f"{name}[{j}]", f"must be a number, got {_json_type(x)}")
            if not -_FLOAT32_MAX <= x <= _FLOAT32_MAX:
                return field_error(f"{name}[{j}]", "must be a finite number within float32 range")
    return field_error(field, "must contain finite numbers only")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
