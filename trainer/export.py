"""Actor weights -> `ddpg-actor/1` safetensors bytes (the only way weights leave the trainer)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from models.training_config import TrainingConfig
from models.weights import decode_actor, encode_actor, read_header
from trainer.env import EnvSpec

# safetensors aligns the tensor data that follows the header to 8 bytes.
_HEADER_ALIGNMENT = 8


def utc_now_iso() -> str:
    """created_at: ISO 8601 in UTC with an explicit offset, so every reader parses the same instant."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def export_actor(
    actor_tensors: Mapping[str, npt.NDArray[np.float32]],
    *,
    spec: EnvSpec,
    config: TrainingConfig,
    eval_mean_return: float | None,
    created_at: str | None = None,
) -> bytes:
    """Encode an actor state_dict (numpy) with the metadata the serving side and the registry need.

    The bytes are canonical: the same weights and metadata always give the same file, so a sha256
    identifies a policy and "same seed, same config" can be checked byte for byte.
    """
    data = encode_actor(
        actor_tensors,
        env_id=spec.env_id,
        action_low=spec.action_low,
        action_high=spec.action_high,
        config=config.to_dict(),
        seed=config.seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at if created_at is not None else utc_now_iso(),
    )
    return canonical_safetensors(data)


def canonical_safetensors(data: bytes) -> bytes:
    """Rewrite the JSON header with sorted keys; the tensor bytes are untouched.

    safetensors writes its header (metadata included) from a hash map, whose order changes from process
    to process. Offsets in the header are relative to the data section, so reordering is safe.
    """
    (header_len,) = struct.unpack("<Q", data[:8])
    header = read_header(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % _HEADER_ALIGNMENT)
    canonical = struct.pack("<Q", len(text)) + text + data[8 + header_len :]
    decode_actor(canonical)  # never let an invalid file out, whatever the rewrite did
    return canonical
