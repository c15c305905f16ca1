"""One uploaded file to a policy for a model: recognise what it is, read it, check it fits the model's spaces.

What a file is comes from its bytes, never from its name: a zip with `data` and `policy.pth` is an SB3 model, a zip
or safetensors of CleanRL's tensor names a CleanRL actor, safetensors with our metadata our own policy, a protobuf
with a graph an ONNX model. A pickle (VecNormalize's `.pkl`, a bare `torch.save` of the old format) is refused
before anything reads it, with the lines that export VecNormalize's statistics as the JSON the upload takes.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.imports.cleanrl import is_cleanrl_state_dict, read_cleanrl_actor, read_tensors
from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp
from models.imports.native import encode_imported
from models.imports.onnx_graph import read_onnx_actor
from models.imports.sb3_zip import read_sb3_zip
from models.policy_types import LEGACY_FORMAT_TAG, POLICY_FORMAT_TAG, ActorWeights, ObsNormalization
from models.weights import WeightsFormatError, decode_actor, read_header

logger = logging.getLogger(__name__)

# Relative tolerance when comparing a file's bounds to the model's: files print bounds in decimal (SB3's `data`).
BOUNDS_TOLERANCE = 1e-5
VEC_NORMALIZE_EXPORT = (
    "import json, pickle  # run where you trust the file: it is your own pickle\n"
    'vec_normalize = pickle.load(open("vec_normalize.pkl", "rb"))\n'
    'json.dump({"mean": vec_normalize.obs_rms.mean.tolist(), "var": vec_normalize.obs_rms.var.tolist(), '
    '"clip": vec_normalize.clip_obs, "epsilon": vec_normalize.epsilon}, open("obs_normalization.json", "w"))'
)
PICKLE_REFUSED = (
    "is a Python pickle (e.g. VecNormalize's .pkl), which could run code when loaded, so it is never read here. "
    "Upload the policy's .zip and send VecNormalize's statistics as the `obs_normalization` JSON field; these three "
    "lines export them:\n" + VEC_NORMALIZE_EXPORT
)


@dataclass(frozen=True)
class ModelSpaces:
    """What a model serves: the sizes and bounds an imported policy must match (a model row's `spaces`)."""

    env_id: str | None  # None: a model whose environment lives with its clients
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    observation_low: tuple[float | None, ...] | None = None
    observation_high: tuple[float | None, ...] | None = None

    @classmethod
    def from_stored(cls, env_id: str | None, spaces: Mapping[str, Any]) -> ModelSpaces:
        def bounds(name: str) -> tuple[float | None, ...] | None:
            values = spaces.get(name)
            return None if values is None else tuple(None if v is None else float(v) for v in values)

        return cls(
            env_id=env_id,
            obs_dim=int(spaces["obs_dim"]),
            act_dim=int(spaces["act_dim"]),
            action_low=tuple(float(v) for v in spaces["action_low"]),
            action_high=tuple(float(v) for v in spaces["action_high"]),
            observation_low=bounds("observation_low"),
            observation_high=bounds("observation_high"),
        )


@dataclass(frozen=True)
class ImportedPolicy:
    """The stored weights bytes of an upload, and where it came from."""

    weights: bytes
    origin: str


def parse_obs_normalization(text: str | None) -> ObsNormalization | None:
    """The `obs_normalization` field: JSON `{"mean": [...], "var": [...], "clip": 10.0, "epsilon": 1e-8}`."""
    if text is None or not text.strip():
        return None
    field = "obs_normalization"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportRefusedError(field, f"is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ImportRefusedError(field, 'must be a JSON object {"mean": [...], "var": [...], "clip", "epsilon"}')
    unknown = sorted(set(value) - {"mean", "var", "clip", "epsilon"})
    if unknown:
        raise ImportRefusedError(f"{field}.{unknown[0]}", "is not a field (mean, var, clip, epsilon)")
    vectors = {}
    for name in ("mean", "var"):
        vector = value.get(name)
        if not isinstance(vector, list) or not vector or not all(_is_number(v) for v in vector):
            raise ImportRefusedError(f"{field}.{name}", "must be a non-empty list of numbers")
        vectors[name] = np.asarray(vector, dtype=np.float32)
    scalars = {}
    for name, default in (("clip", 10.0), ("epsilon", 1e-8)):
        scalar = value.get(name, default)
        if not _is_number(scalar) or not math.isfinite(scalar) or scalar <= 0:
            raise ImportRefusedError(f"{field}.{name}", f"must be a positive number, got {scalar!r}")
        scalars[name] = float(scalar)
    try:
        return ObsNormalization(
            mean=vectors["mean"], var=vectors["var"], clip=scalars["clip"], epsilon=scalars["epsilon"]
        )
    except WeightsFormatError as exc:
        raise ImportRefusedError(field, str(exc)) from None


def read_upload(
    data: bytes,
    *,
    spaces: ModelSpaces,
    obs_normalization: ObsNormalization | None,
    max_uncompressed: int,
    source_name: str | None = None,
) -> ImportedPolicy:
    """The policy in an uploaded file, checked against the model's spaces; ImportRefusedError naming the field."""
    try:
        return _read_upload(data, spaces, obs_normalization, max_uncompressed, source_name)
    except ImportRefusedError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        OverflowError,
        MemoryError,
        RecursionError,
        NotImplementedError,
    ) as exc:
        # Hostile bytes can fail a library's parser in ways none of the readers anticipated (a protobuf that parses
        # into nonsense, a header with the wrong types): still a refusal of the file, never a server error.
        logger.info("an upload failed to parse: %s: %s", type(exc).__name__, exc)
        raise ImportRefusedError("file", f"cannot be read as a policy ({type(exc).__name__}: {exc})") from None


def _read_upload(
    data: bytes,
    spaces: ModelSpaces,
    obs_normalization: ObsNormalization | None,
    max_uncompressed: int,
    source_name: str | None,
) -> ImportedPolicy:
    if not data:
        raise ImportRefusedError("file", "is empty")
    if _is_pickle(data):
        raise ImportRefusedError("file", PICKLE_REFUSED)
    mlp: ImportedMlp
    if data[:4] == b"PK\x03\x04":
        if _zip_has(data, "policy.pth"):
            mlp = read_sb3_zip(data, max_uncompressed=max_uncompressed, obs_normalization=obs_normalization)
        else:
            mlp = _cleanrl(data, obs_normalization, max_uncompressed)
    elif _looks_like_safetensors(data):
        own = _own_policy(data)
        if own is not None:
            if obs_normalization is not None:
                raise ImportRefusedError("obs_normalization", "our own policy files carry their normalization inside")
            check_sizes_and_bounds(
                spaces,
                obs_dim=own.obs_dim,
                act_dim=own.act_dim,
                action_low=own.action_low.tolist(),
                action_high=own.action_high.tolist(),
            )
            return ImportedPolicy(weights=data, origin=own.origin)
        mlp = _cleanrl(data, obs_normalization, max_uncompressed)
    else:
        mlp = read_onnx_actor(
            data, action_low=spaces.action_low, action_high=spaces.action_high, obs_normalization=obs_normalization
        )
    check_spaces(mlp, spaces)
    weights = encode_imported(mlp, env_id=spaces.env_id or "", source_name=source_name)
    return ImportedPolicy(weights=weights, origin=mlp.origin)


def check_spaces(mlp: ImportedMlp, spaces: ModelSpaces) -> None:
    """422 naming the first mismatch between the file's spaces and the model's."""
    check_sizes_and_bounds(
        spaces,
        obs_dim=mlp.obs_dim,
        act_dim=mlp.act_dim,
        action_low=mlp.action_low.tolist(),
        action_high=mlp.action_high.tolist(),
        observation_low=mlp.observation_low,
        observation_high=mlp.observation_high,
    )


def check_sizes_and_bounds(
    spaces: ModelSpaces,
    *,
    obs_dim: int,
    act_dim: int,
    action_low: Sequence[float],
    action_high: Sequence[float],
    observation_low: Sequence[float | None] | None = None,
    observation_high: Sequence[float | None] | None = None,
) -> None:
    model = spaces.env_id or "declared spaces"
    if obs_dim != spaces.obs_dim:
        raise ImportRefusedError(
            "spaces.obs_dim",
            f"the policy takes {obs_dim} observations but the model ({model}) has {spaces.obs_dim}",
        )
    if act_dim != spaces.act_dim:
        raise ImportRefusedError(
            "spaces.act_dim",
            f"the policy gives {act_dim} actions but the model ({model}) takes {spaces.act_dim}",
        )
    for name, mine, theirs in (
        ("action_low", action_low, spaces.action_low),
        ("action_high", action_high, spaces.action_high),
        ("observation_low", observation_low, spaces.observation_low),
        ("observation_high", observation_high, spaces.observation_high),
    ):
        if mine is None or theirs is None:
            continue
        if not _bounds_match(mine, theirs):
            raise ImportRefusedError(
                f"spaces.{name}", f"the policy's {name} is {list(mine)} but the model's is {list(theirs)}"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bounds_match(mine: Any, theirs: Any) -> bool:
    if len(mine) != len(theirs):
        return False
    for a, b in zip(mine, theirs, strict=True):
        if (a is None) != (b is None):
            return False
        if a is not None and not math.isclose(a, b, rel_tol=BOUNDS_TOLERANCE, abs_tol=BOUNDS_TOLERANCE):
            return False
    return True


def _cleanrl(data: bytes, obs_normalization: ObsNormalization | None, max_uncompressed: int) -> ImportedMlp:
    tensors = read_tensors(data, max_uncompressed=max_uncompressed)
    if not is_cleanrl_state_dict(tensors):
        names = ", ".join(sorted(tensors)[:8])
        raise ImportRefusedError(
            "file",
            f"holds tensors {names}: neither a CleanRL DDPG/TD3 actor (fc1, fc2, fc_mu, action_scale, action_bias) "
            f"nor one of our own policy files ({POLICY_FORMAT_TAG}, {LEGACY_FORMAT_TAG})",
        )
    return read_cleanrl_actor(tensors, obs_normalization=obs_normalization)


def _own_policy(data: bytes) -> ActorWeights | None:
    """Our own file after the strict loader (its origin: `trained`, or an importer's); None when it is not ours."""
    try:
        header = read_header(data)
    except WeightsFormatError:
        return None
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") not in (LEGACY_FORMAT_TAG, POLICY_FORMAT_TAG):
        return None
    try:
        actor = decode_actor(data)
    except WeightsFormatError as exc:
        raise ImportRefusedError("file", str(exc)) from None
    return actor


def _is_pickle(data: bytes) -> bool:
    # Protocol 2+ pickles start with PROTO (0x80) and a version; protocol 0/1 ones with an opcode such as `(` or
    # `c`; a safetensors header length (8 bytes, little-endian) would need a 0x80.. low byte and a `{` at byte 8.
    return (data[0] == 0x80 and len(data) > 1 and data[1] <= 5) and not _looks_like_safetensors(data)


def _looks_like_safetensors(data: bytes) -> bool:
    return len(data) > 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < len(data)


def _zip_has(data: bytes, name: str) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return name in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return False
