"""Actor weights -> `ddpg-actor/1` safetensors bytes (the only way weights leave the trainer)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from models.weights import encode_actor
from trainer.config import DDPGConfig
from trainer.env import EnvSpec


def utc_now_iso() -> str:
    """created_at: ISO 8601 in UTC with an explicit offset, so every reader parses the same instant."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def export_actor(
    actor_tensors: Mapping[str, npt.NDArray[np.float32]],
    *,
    spec: EnvSpec,
    config: DDPGConfig,
    eval_mean_return: float | None,
    created_at: str | None = None,
) -> bytes:
    """Encode an actor state_dict (numpy) with the metadata the serving side and the registry need."""
    return encode_actor(
        actor_tensors,
        env_id=spec.env_id,
        action_low=spec.action_low,
        action_high=spec.action_high,
        config=config.to_dict(),
        seed=config.seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at if created_at is not None else utc_now_iso(),
    )
