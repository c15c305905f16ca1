"""The `policy-mlp/1` file format: canonical encoding of a general policy and its strict decoder.

Torch-free on purpose: the API reads and serves these with numpy only. Nothing here ever unpickles. The policy
form (`ActorWeights` and its parts) lives in models.policy_types, its validation and builder
(`build_policy_weights`) in models.policy_validation, the safetensors reading every format shares in
models.strict_safetensors.

- `encode_policy(weights) -> bytes`: canonical `policy-mlp/1` safetensors bytes (the same policy gives the same
  bytes), run through the strict decoder before they are returned.
- `decode_policy_mlp(bytes) -> ActorWeights`; `models.weights.decode_actor(bytes)` is the strict loader for every
  format and dispatches here. A `ddpg-actor/1` file decodes into the same general form (relu, relu, then
  `tanh_scale`; no normalization; origin `trained`).

`policy-mlp/1` layout: tensors `layers.{i}.weight` / `layers.{i}.bias` (i from 0, torch shapes) and, with
normalization, `obs_normalization.mean` / `obs_normalization.var` ([obs_dim]). Metadata values are strings (lists
and dicts JSON-encoded), exactly these keys: format, origin, env_id, obs_dim, act_dim, hidden_sizes (JSON list),
activations (JSON list, one per hidden layer), output, action_low, action_high, obs_normalization (JSON
`{"clip": float|null, "epsilon": float}` or `null`), config (JSON object), seed, eval_mean_return, created_at.
An unknown key, a missing key or an unlisted tensor is refused: a later version gets a new tag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save as st_save

from models.policy_types import (
    NORM_MEAN,
    NORM_VAR,
    POLICY_FORMAT_TAG,
    ActorWeights,
    DenseLayer,
    ObsNormalization,
    parse_activation,
    parse_output,
)
from models.policy_validation import build_policy_weights
from models.strict_safetensors import (
    MAX_DIM,
    MAX_LAYERS,
    MAX_PARAMETERS,
    WeightsFormatError,
    canonical_safetensors,
    check_declared_tensors,
    float_vector,
    json_value,
    load_tensors,
    optional_float,
    optional_int,
    positive_int,
    read_header,
)

POLICY_METADATA_KEYS = (
    "format",
    "origin",
    "env_id",
    "obs_dim",
    "act_dim",
    "hidden_sizes",
    "activations",
    "output",
    "action_low",
    "action_high",
    "obs_normalization",
    "config",
    "seed",
    "eval_mean_return",
    "created_at",
)


def encode_policy(weights: ActorWeights) -> bytes:
    """Canonical `policy-mlp/1` bytes of any policy (a `ddpg-actor/1` one included: this converts it).

    Canonical: the header's keys are sorted, so the same policy always gives the same bytes and a sha256 names it.
    """
    general = weights if weights.format == POLICY_FORMAT_TAG else _as_policy_format(weights)
    tensors = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in general.tensors.items()}
    data = canonical_safetensors(st_save(tensors, metadata=general.metadata_strings()))
    decode_policy_mlp(data)
    return data


def decode_policy_mlp(data: bytes) -> ActorWeights:
    """Strictly validate and load `policy-mlp/1` bytes (`models.weights.decode_actor` dispatches here)."""
    header = read_header(data)
    raw_meta = header.get("__metadata__")
    if not isinstance(raw_meta, dict):
        raise WeightsFormatError(f"safetensors file has no metadata; expected format {POLICY_FORMAT_TAG!r}")
    missing = [key for key in POLICY_METADATA_KEYS if key not in raw_meta]
    if missing:
        raise WeightsFormatError(f"metadata lacks required keys: {', '.join(missing)}")
    unknown = sorted(set(raw_meta) - set(POLICY_METADATA_KEYS))
    if unknown:
        raise WeightsFormatError(f"metadata has unknown keys for {POLICY_FORMAT_TAG}: {', '.join(unknown)}")
    if raw_meta["format"] != POLICY_FORMAT_TAG:
        raise WeightsFormatError(f"unsupported format {raw_meta['format']!r}; expected {POLICY_FORMAT_TAG!r}")

    obs_dim = positive_int(raw_meta, "obs_dim")
    act_dim = positive_int(raw_meta, "act_dim")
    hidden_sizes = _int_list(raw_meta, "hidden_sizes")
    activations = json_value(raw_meta, "activations")
    if not isinstance(activations, list) or len(activations) != len(hidden_sizes):
        raise WeightsFormatError(
            f"metadata 'activations' must be a list of {len(hidden_sizes)} names (one per hidden layer), "
            f"got {raw_meta['activations']!r}"
        )
    parsed_activations = [parse_activation(name, f"activations[{index}]") for index, name in enumerate(activations)]
    output = parse_output(raw_meta["output"])
    norm_spec = json_value(raw_meta, "obs_normalization")
    if norm_spec is not None and (not isinstance(norm_spec, dict) or set(norm_spec) != {"clip", "epsilon"}):
        raise WeightsFormatError(
            f"metadata 'obs_normalization' must be null or an object with keys clip and epsilon, "
            f"got {raw_meta['obs_normalization']!r}"
        )
    config = json_value(raw_meta, "config")
    if not isinstance(config, dict):
        raise WeightsFormatError("metadata 'config' must be a JSON object")

    sizes = [obs_dim, *hidden_sizes, act_dim]
    expected: dict[str, tuple[int, ...]] = {}
    for index in range(len(sizes) - 1):
        expected[f"layers.{index}.weight"] = (sizes[index + 1], sizes[index])
        expected[f"layers.{index}.bias"] = (sizes[index + 1],)
    if norm_spec is not None:
        expected[NORM_MEAN] = (obs_dim,)
        expected[NORM_VAR] = (obs_dim,)
    check_declared_tensors(header, expected)
    if sum(math.prod(shape) for shape in expected.values()) > MAX_PARAMETERS:
        raise WeightsFormatError(f"the policy has more than {MAX_PARAMETERS} parameters")
    loaded = load_tensors(data)

    layers = [
        DenseLayer(
            loaded[f"layers.{index}.weight"],
            loaded[f"layers.{index}.bias"],
            parsed_activations[index] if index < len(hidden_sizes) else None,
        )
        for index in range(len(sizes) - 1)
    ]
    normalization = None
    if norm_spec is not None:
        clip = norm_spec["clip"]
        if clip is not None and (not isinstance(clip, int | float) or isinstance(clip, bool)):
            raise WeightsFormatError(f"obs_normalization.clip must be a number or null, got {clip!r}")
        epsilon = norm_spec["epsilon"]
        if not isinstance(epsilon, int | float) or isinstance(epsilon, bool):
            raise WeightsFormatError(f"obs_normalization.epsilon must be a number, got {epsilon!r}")
        normalization = ObsNormalization(loaded[NORM_MEAN], loaded[NORM_VAR], clip=clip, epsilon=epsilon)
    return build_policy_weights(
        layers,
        output=output,
        action_low=float_vector(raw_meta, "action_low", act_dim),
        action_high=float_vector(raw_meta, "action_high", act_dim),
        obs_normalization=normalization,
        env_id=str(raw_meta["env_id"]),
        origin=str(raw_meta["origin"]),
        config=config,
        seed=optional_int(raw_meta, "seed"),
        eval_mean_return=optional_float(raw_meta, "eval_mean_return"),
        created_at=str(raw_meta["created_at"]),
    )


def _as_policy_format(weights: ActorWeights) -> ActorWeights:
    return ActorWeights(
        layers=weights.layers,
        output=weights.output,
        action_low=weights.action_low,
        action_high=weights.action_high,
        obs_normalization=weights.obs_normalization,
        env_id=weights.env_id,
        config=weights.config,
        seed=weights.seed,
        eval_mean_return=weights.eval_mean_return,
        created_at=weights.created_at,
        origin=weights.origin,
        format=POLICY_FORMAT_TAG,
    )


def _int_list(meta: Mapping[str, Any], key: str) -> list[int]:
    value = json_value(meta, key)
    if (
        not isinstance(value, list)
        or len(value) > MAX_LAYERS - 1
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_DIM for v in value)
    ):
        raise WeightsFormatError(
            f"metadata {key!r} must be a list of at most {MAX_LAYERS - 1} integers from 1 to {MAX_DIM}, "
            f"got {meta[key]!r}"
        )
    return value
