"""Actor weights -> policy file bytes (the only way weights leave the trainer).

An actor trained on raw observations is written as `ddpg-actor/1`, as it always was (every earlier server reads
it); one trained with observation normalization as `policy-mlp/1`, the statistics frozen into it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from models.policy_format import encode_policy
from models.policy_types import ORIGIN_TRAINED, Activation, DenseLayer, ObsNormalization, OutputTransform
from models.policy_validation import build_policy_weights, utc_now_iso
from models.strict_safetensors import canonical_safetensors
from models.training_config import TrainingConfig
from models.weights import decode_actor, encode_actor
from trainer.env import EnvSpec


def export_actor(
    actor_tensors: Mapping[str, npt.NDArray[np.float32]],
    *,
    spec: EnvSpec,
    config: TrainingConfig,
    eval_mean_return: float | None,
    created_at: str | None = None,
    obs_normalization: ObsNormalization | None = None,
) -> bytes:
    """Encode an actor state_dict (numpy) with the metadata the serving side and the registry need.

    The bytes are canonical: the same weights and metadata always give the same file, so a sha256
    identifies a policy and "same seed, same config" can be checked byte for byte.
    """
    if obs_normalization is not None:
        return _export_normalized(
            actor_tensors,
            spec=spec,
            config=config,
            eval_mean_return=eval_mean_return,
            created_at=created_at if created_at is not None else utc_now_iso(),
            obs_normalization=obs_normalization,
        )
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
    return validated_canonical(data)


def _export_normalized(
    actor_tensors: Mapping[str, npt.NDArray[np.float32]],
    *,
    spec: EnvSpec,
    config: TrainingConfig,
    eval_mean_return: float | None,
    created_at: str,
    obs_normalization: ObsNormalization,
) -> bytes:
    """The seed Actor (models.networks: relu, relu, tanh) with its frozen normalization, as `policy-mlp/1`."""
    layers = [
        DenseLayer(actor_tensors["linear1.weight"], actor_tensors["linear1.bias"], Activation.RELU),
        DenseLayer(actor_tensors["linear2.weight"], actor_tensors["linear2.bias"], Activation.RELU),
        DenseLayer(actor_tensors["linear3.weight"], actor_tensors["linear3.bias"], None),
    ]
    weights = build_policy_weights(
        layers,
        output=OutputTransform.TANH_SCALE,
        action_low=spec.action_low,
        action_high=spec.action_high,
        obs_normalization=obs_normalization,
        env_id=spec.env_id,
        origin=ORIGIN_TRAINED,
        config=config.to_dict(),
        seed=config.seed,
        eval_mean_return=eval_mean_return,
        created_at=created_at,
    )
    return encode_policy(weights)  # canonical already


def validated_canonical(data: bytes) -> bytes:
    """The file with its header in canonical order, checked by the legacy reader before it leaves."""
    canonical = canonical_safetensors(data)
    decode_actor(canonical)  # never let an invalid file out, whatever the rewrite did
    return canonical
