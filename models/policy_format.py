"""The general policy: any MLP, its output transform and optional observation normalization, validated once.

Torch-free on purpose: the API builds, reads and serves these with numpy only. Nothing here ever unpickles.

Public interface (importers build on it; import it from here or from `models.weights`):

- `Activation`: `relu`, `tanh`, `elu` (alpha 1) or `leaky_relu` (negative slope 0.01, torch's default).
- `DenseLayer(weight, bias, activation)`: one `nn.Linear`, weight in torch's shape `[out, in]`, bias `[out]`, and
  the activation applied after it; `None` for the last layer, whose output goes to the output transform.
- `OutputTransform`: `tanh_scale` (DDPG, TD3, SAC: `low + (tanh(y) + 1) / 2 * (high - low)`) or `clip`
  (PPO, A2C: `clip(y, low, high)`); either way the served action is also clipped to the bounds.
- `ObsNormalization(mean, var, clip, epsilon)`: what VecNormalize does before the network,
  `obs' = clip((obs - mean) / sqrt(var + epsilon), -clip, clip)`; `clip=None` does not clip.
- `build_policy_weights(layers, output=..., action_low=..., action_high=..., obs_normalization=None, env_id=...,
  origin="trained", config=None, seed=None, eval_mean_return=None, created_at=None) -> ActorWeights`: validates
  everything (the shapes chain, every value finite, bounds ordered, sizes capped) and raises `WeightsFormatError`
  naming the tensor or field at fault.
- `encode_policy(weights) -> bytes`: canonical `policy-mlp/1` safetensors bytes (the same policy gives the same
  bytes), run through the strict decoder before they are returned.
- `origin`: where the policy comes from, free text of 1 to 100 printable characters: `trained` (this service's
  trainer, and every `ddpg-actor/1` file), `sb3:TD3 2.x`, `cleanrl`, `onnx`, ...
- `models.weights.decode_actor(bytes) -> ActorWeights`: the strict loader for every format; a `ddpg-actor/1` file
  decodes into this same general form (relu, relu, then `tanh_scale`; no normalization; origin `trained`).

`policy-mlp/1` layout: tensors `layers.{i}.weight` / `layers.{i}.bias` (i from 0, torch shapes) and, with
normalization, `obs_normalization.mean` / `obs_normalization.var` ([obs_dim]). Metadata values are strings (lists
and dicts JSON-encoded), exactly these keys: format, origin, env_id, obs_dim, act_dim, hidden_sizes (JSON list),
activations (JSON list, one per hidden layer), output, action_low, action_high, obs_normalization (JSON
`{"clip": float|null, "epsilon": float}` or `null`), config (JSON object), seed, eval_mean_return, created_at.
An unknown key, a missing key or an unlisted tensor is refused: a later version gets a new tag.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

FloatArray = npt.NDArray[np.float32]

LEGACY_FORMAT_TAG = "ddpg-actor/1"
POLICY_FORMAT_TAG = "policy-mlp/1"
ORIGIN_TRAINED = "trained"

# A header larger than this is not a policy file; refusing early keeps a hostile upload from making us parse
# megabytes of JSON.
MAX_HEADER_BYTES = 1 << 20
# Caps on what a file may claim, so a hostile upload cannot make us allocate gigabytes.
MAX_DIM = 65536
MAX_LAYERS = 32
MAX_PARAMETERS = 1 << 26  # 64 Mi floats: 256 MiB of float32, far beyond any MLP policy
MAX_ORIGIN_CHARS = 100

LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU's default, which SB3 and CleanRL use
ELU_ALPHA = 1.0  # torch.nn.ELU's default

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
NORM_MEAN = "obs_normalization.mean"
NORM_VAR = "obs_normalization.var"


class WeightsFormatError(ValueError):
    """The bytes or arrays are not a valid policy; the message names the tensor or field and says why."""


class Activation(StrEnum):
    """The activation after a hidden layer."""

    RELU = "relu"
    TANH = "tanh"
    ELU = "elu"
    LEAKY_RELU = "leaky_relu"


class OutputTransform(StrEnum):
    """How the last layer's output becomes an action within [action_low, action_high]."""

    TANH_SCALE = "tanh_scale"  # low + (tanh(y) + 1) / 2 * (high - low): DDPG, TD3, SAC (its mean action)
    CLIP = "clip"  # clip(y, low, high): PPO, A2C (SB3's predict clips to the action space)


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """One torch `nn.Linear` and the activation after it (None: the last layer, before the output transform).

    The arrays are stored as contiguous float32; their shapes are checked by `build_policy_weights`, which knows
    where the layer sits.
    """

    weight: FloatArray  # [out, in], torch's layout
    bias: FloatArray  # [out]
    activation: Activation | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _float32(self.weight))
        object.__setattr__(self, "bias", _float32(self.bias))
        if self.activation is not None:
            object.__setattr__(self, "activation", _activation(self.activation, "activation"))

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True, eq=False)
class ObsNormalization:
    """VecNormalize's frozen observation statistics: obs' = clip((obs - mean) / sqrt(var + epsilon), -clip, clip)."""

    mean: FloatArray  # [obs_dim]
    var: FloatArray  # [obs_dim], >= 0
    clip: float | None = 10.0  # VecNormalize's clip_obs default; None: no clipping
    epsilon: float = 1e-8  # VecNormalize's default

    def __post_init__(self) -> None:
        mean = _float32(self.mean)
        var = _float32(self.var)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)
        if mean.ndim != 1 or var.shape != mean.shape or not 0 < mean.shape[0] <= MAX_DIM:
            raise WeightsFormatError(
                f"{NORM_MEAN} and {NORM_VAR} must be vectors of one length (1 to {MAX_DIM}), "
                f"got shapes {list(mean.shape)} and {list(var.shape)}"
            )
        _require_finite(mean, NORM_MEAN)
        _require_finite(var, NORM_VAR)
        if np.any(var < 0):
            raise WeightsFormatError(f"{NORM_VAR} must be >= 0, got {float(var.min())}")
        epsilon = _finite_number(self.epsilon, "obs_normalization.epsilon")
        if epsilon < 0:
            raise WeightsFormatError(f"obs_normalization.epsilon must be >= 0, got {epsilon}")
        object.__setattr__(self, "epsilon", epsilon)
        if self.clip is not None:
            clip = _finite_number(self.clip, "obs_normalization.clip")
            if clip <= 0:
                raise WeightsFormatError(f"obs_normalization.clip must be > 0 (or null for none), got {clip}")
            object.__setattr__(self, "clip", clip)
        if np.any(self.std() == 0):
            raise WeightsFormatError(f"{NORM_VAR} + epsilon must be > 0 everywhere (a zero would divide by zero)")

    def std(self) -> FloatArray:
        """sqrt(var + epsilon) in float32, as every forward pass here computes it."""
        std: FloatArray = np.sqrt(self.var + np.float32(self.epsilon))
        return std

    @property
    def obs_dim(self) -> int:
        return int(self.mean.shape[0])


@dataclass(frozen=True, eq=False)
class ActorWeights:
    """A validated policy in the general form, whatever file format it came from.

    Build one with `build_policy_weights` (or decode one with `models.weights.decode_actor`), never directly:
    the validation lives there.
    """

    layers: tuple[DenseLayer, ...]
    output: OutputTransform
    action_low: FloatArray
    action_high: FloatArray
    obs_normalization: ObsNormalization | None
    env_id: str
    config: dict[str, Any]
    seed: int | None
    eval_mean_return: float | None
    created_at: str
    origin: str = ORIGIN_TRAINED
    # The tag of the file this came from (or is written as): `ddpg-actor/1` keeps its metadata keys as they were.
    format: str = POLICY_FORMAT_TAG

    @property
    def obs_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def act_dim(self) -> int:
        return self.layers[-1].out_features

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(layer.out_features for layer in self.layers[:-1])

    @property
    def activations(self) -> tuple[Activation, ...]:
        return tuple(_activation(layer.activation, "activation") for layer in self.layers[:-1])

    @property
    def hidden_size(self) -> int:
        """The widest hidden layer (0 for a linear policy); for a `ddpg-actor/1` file, its `hidden_size`."""
        return max(self.hidden_sizes, default=0)

    @property
    def tensors(self) -> dict[str, FloatArray]:
        """The tensors under the names of this policy's file format (no copies)."""
        if self.format == LEGACY_FORMAT_TAG:
            names = [f"linear{index}" for index in range(1, len(self.layers) + 1)]
        else:
            names = [f"layers.{index}" for index in range(len(self.layers))]
        tensors: dict[str, FloatArray] = {}
        for name, layer in zip(names, self.layers, strict=True):
            tensors[f"{name}.weight"] = layer.weight
            tensors[f"{name}.bias"] = layer.bias
        if self.obs_normalization is not None:
            tensors[NORM_MEAN] = self.obs_normalization.mean
            tensors[NORM_VAR] = self.obs_normalization.var
        return tensors

    def metadata(self) -> dict[str, Any]:
        """The metadata as plain JSON-able values (for the registry and the API)."""
        if self.format == LEGACY_FORMAT_TAG:
            # Exactly the keys `ddpg-actor/1` always had, so stored policies and API answers do not change.
            return {
                "format": LEGACY_FORMAT_TAG,
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
        norm = self.obs_normalization
        return {
            "format": POLICY_FORMAT_TAG,
            "origin": self.origin,
            "env_id": self.env_id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activations": [str(activation) for activation in self.activations],
            "output": str(self.output),
            "action_low": self.action_low.tolist(),
            "action_high": self.action_high.tolist(),
            "obs_normalization": None if norm is None else {"clip": norm.clip, "epsilon": norm.epsilon},
            "config": self.config,
            "seed": self.seed,
            "eval_mean_return": self.eval_mean_return,
            "created_at": self.created_at,
        }

    def metadata_strings(self) -> dict[str, str]:
        """The metadata as the safetensors header stores it: strings, lists and dicts JSON-encoded."""
        strings: dict[str, str] = {}
        for key, value in self.metadata().items():
            if key in ("format", "origin", "env_id", "created_at", "output"):
                strings[key] = str(value)
            elif key in ("seed",):
                strings[key] = "" if value is None else str(value)
            elif key == "eval_mean_return":
                strings[key] = "" if value is None else repr(float(value))
            elif key in ("obs_dim", "act_dim", "hidden_size"):
                strings[key] = str(value)
            else:
                strings[key] = json.dumps(value, sort_keys=True)
        return strings


def utc_now_iso() -> str:
    """created_at: ISO 8601 in UTC with an explicit offset, so every reader parses the same instant."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_policy_weights(
    layers: Sequence[DenseLayer],
    *,
    output: OutputTransform | str,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    obs_normalization: ObsNormalization | None = None,
    env_id: str,
    origin: str = ORIGIN_TRAINED,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    eval_mean_return: float | None = None,
    created_at: str | None = None,
) -> ActorWeights:
    """A validated policy; WeightsFormatError naming the tensor or field for anything that would not serve."""
    return _validated(
        layers,
        output=output,
        action_low=action_low,
        action_high=action_high,
        obs_normalization=obs_normalization,
        env_id=env_id,
        origin=origin,
        config=config,
        seed=seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at if created_at is not None else utc_now_iso(),
        file_format=POLICY_FORMAT_TAG,
        layer_names=[f"layers.{index}" for index in range(len(layers))],
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
    parsed_activations = [_activation(name, f"activations[{index}]") for index, name in enumerate(activations)]
    output = _output(raw_meta["output"])
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
    return _validated(
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
        file_format=POLICY_FORMAT_TAG,
        layer_names=[f"layers.{index}" for index in range(len(layers))],
    )


def legacy_actor_weights(
    layers: Sequence[DenseLayer],
    *,
    action_low: FloatArray,
    action_high: FloatArray,
    env_id: str,
    config: Mapping[str, Any],
    seed: int | None,
    eval_mean_return: float | None,
    created_at: str,
) -> ActorWeights:
    """The general form of a decoded `ddpg-actor/1` file (models.weights): relu, relu, then tanh_scale."""
    return _validated(
        layers,
        output=OutputTransform.TANH_SCALE,
        action_low=action_low,
        action_high=action_high,
        obs_normalization=None,
        env_id=env_id,
        origin=ORIGIN_TRAINED,
        config=config,
        seed=seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at,
        file_format=LEGACY_FORMAT_TAG,
        layer_names=[f"linear{index}" for index in range(1, len(layers) + 1)],
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


def _validated(
    layers: Sequence[DenseLayer],
    *,
    output: OutputTransform | str,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    obs_normalization: ObsNormalization | None,
    env_id: str,
    origin: str,
    config: Mapping[str, Any] | None,
    seed: int | None,
    eval_mean_return: float | None,
    created_at: str,
    file_format: str,
    layer_names: Sequence[str],
) -> ActorWeights:
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise WeightsFormatError(f"a policy has 1 to {MAX_LAYERS} layers, got {len(layers)}")
    parameters = 0
    previous_out: int | None = None
    for index, (name, layer) in enumerate(zip(layer_names, layers, strict=True)):
        if not isinstance(layer, DenseLayer):
            raise WeightsFormatError(f"{name} must be a DenseLayer, got {type(layer).__name__}")
        weight, bias = layer.weight, layer.bias
        if weight.ndim != 2 or not (0 < weight.shape[0] <= MAX_DIM and 0 < weight.shape[1] <= MAX_DIM):
            raise WeightsFormatError(
                f"tensor {name}.weight must be [out, in] with sizes 1 to {MAX_DIM}, got shape {list(weight.shape)}"
            )
        if bias.shape != (weight.shape[0],):
            raise WeightsFormatError(
                f"tensor {name}.bias has shape {list(bias.shape)}, expected [{weight.shape[0]}] (the weight's out)"
            )
        if previous_out is not None and weight.shape[1] != previous_out:
            raise WeightsFormatError(
                f"tensor {name}.weight takes {weight.shape[1]} inputs but the layer before gives {previous_out}"
            )
        previous_out = int(weight.shape[0])
        parameters += weight.size + bias.size
        if parameters > MAX_PARAMETERS:
            raise WeightsFormatError(f"the policy has more than {MAX_PARAMETERS} parameters")
        _require_finite(weight, f"{name}.weight")
        _require_finite(bias, f"{name}.bias")
        is_last = index == len(layers) - 1
        if is_last and layer.activation is not None:
            raise WeightsFormatError(
                f"{name} is the last layer: its activation must be None (the output transform follows it), "
                f"got {layer.activation!s}"
            )
        if not is_last and layer.activation is None:
            raise WeightsFormatError(f"{name} is a hidden layer: it needs an activation ({_ACTIVATION_NAMES})")
    obs_dim = layers[0].in_features
    act_dim = layers[-1].out_features
    low = _bound_vector(action_low, "action_low", act_dim)
    high = _bound_vector(action_high, "action_high", act_dim)
    if not np.all(low < high):
        raise WeightsFormatError("metadata action_low must be strictly below action_high")
    if obs_normalization is not None:
        if not isinstance(obs_normalization, ObsNormalization):
            raise WeightsFormatError("obs_normalization must be an ObsNormalization or None")
        if obs_normalization.obs_dim != obs_dim:
            raise WeightsFormatError(
                f"tensor {NORM_MEAN} has {obs_normalization.obs_dim} values but the policy takes {obs_dim} observations"
            )
    if not isinstance(env_id, str):
        raise WeightsFormatError(f"env_id must be a string, got {env_id!r}")
    if not isinstance(origin, str) or not 0 < len(origin) <= MAX_ORIGIN_CHARS or not origin.isprintable():
        raise WeightsFormatError(f"origin must be 1 to {MAX_ORIGIN_CHARS} printable characters, got {origin!r}")
    config_dict = dict(config or {})
    try:
        json.dumps(config_dict)
    except (TypeError, ValueError) as exc:
        raise WeightsFormatError(f"config must be JSON-encodable: {exc}") from None
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise WeightsFormatError(f"seed must be an integer or None, got {seed!r}")
    eval_score = None if eval_mean_return is None else _finite_number(eval_mean_return, "eval_mean_return")
    return ActorWeights(
        layers=tuple(layers),
        output=_output(output),
        action_low=low,
        action_high=high,
        obs_normalization=obs_normalization,
        env_id=env_id,
        config=config_dict,
        seed=seed,
        eval_mean_return=eval_score,
        created_at=str(created_at),
        origin=origin,
        format=file_format,
    )


# --- the strict reading helpers every format shares ---------------------------------------------------------------


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
        _require_finite(array, name)
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


_ACTIVATION_NAMES = ", ".join(str(activation) for activation in Activation)
_OUTPUT_NAMES = ", ".join(str(output) for output in OutputTransform)
_ACTIVATION_VALUES = frozenset(str(activation) for activation in Activation)
_OUTPUT_VALUES = frozenset(str(output) for output in OutputTransform)


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


def _activation(value: object, where: str) -> Activation:
    if isinstance(value, str) and value in _ACTIVATION_VALUES:
        return Activation(value)
    raise WeightsFormatError(f"{where} must be one of {_ACTIVATION_NAMES}, got {value!r}")


def _output(value: object) -> OutputTransform:
    if isinstance(value, str) and value in _OUTPUT_VALUES:
        return OutputTransform(value)
    raise WeightsFormatError(f"output must be one of {_OUTPUT_NAMES}, got {value!r}")


def _float32(value: npt.ArrayLike) -> FloatArray:
    try:
        return np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise WeightsFormatError(f"expected an array of numbers: {exc}") from None


def _require_finite(array: FloatArray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        raise WeightsFormatError(f"tensor {name} holds non-finite values (NaN or infinity)")


def _finite_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise WeightsFormatError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise WeightsFormatError(f"{name} must be finite, got {value!r}")
    return number


def _bound_vector(value: npt.ArrayLike, name: str, length: int) -> FloatArray:
    array = _float32(value).ravel()
    if array.shape != (length,):
        raise WeightsFormatError(f"{name} must have {length} values (act_dim), got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise WeightsFormatError(f"{name} must be finite numbers, got {array.tolist()}")
    return array
