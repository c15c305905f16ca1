"""CleanRL's DDPG and TD3 actor (`ddpg_continuous_action.py`, `td3_continuous_action.py`), from its state dict.

    fc1 -> relu -> fc2 -> relu -> fc_mu -> tanh -> * action_scale + action_bias

The state dict comes as safetensors or as a `torch.save`d file (read by `models.imports.safe_pickle`, never
unpickled). `action_scale` and `action_bias` are CleanRL's `(high - low) / 2` and `(high + low) / 2`, so the
bounds are `bias -/+ scale` and the output is our `tanh_scale`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp, build_mlp, dense
from models.imports.safe_pickle import read_state_dict
from models.policy_types import Activation, ObsNormalization, OutputTransform

FIELD = "file"
CLEANRL_KEYS = frozenset(
    {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc_mu.weight", "fc_mu.bias", "action_scale", "action_bias"}
)


def read_tensors(data: bytes, *, max_uncompressed: int) -> dict[str, npt.NDArray[Any]]:
    """A state dict's tensors from safetensors or torch.save bytes (by their first bytes), never unpickled."""
    if data[:4] == b"PK\x03\x04":
        return read_state_dict(data, field=FIELD, max_uncompressed=max_uncompressed)
    try:
        return dict(st_load(data))
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise ImportRefusedError(FIELD, f"neither a safetensors file nor a torch state dict ({exc})") from None


def is_cleanrl_state_dict(tensors: dict[str, npt.NDArray[Any]]) -> bool:
    return set(tensors) >= CLEANRL_KEYS


def read_cleanrl_actor(
    tensors: dict[str, npt.NDArray[Any]], *, obs_normalization: ObsNormalization | None = None
) -> ImportedMlp:
    """The actor of a CleanRL DDPG/TD3 state dict; ImportRefusedError naming the missing or malformed tensor."""
    missing = sorted(CLEANRL_KEYS - set(tensors))
    if missing:
        raise ImportRefusedError(FIELD, f"not a CleanRL DDPG/TD3 actor: it lacks {', '.join(missing)}")
    extra = sorted(set(tensors) - CLEANRL_KEYS)
    if extra:
        raise ImportRefusedError(FIELD, f"a CleanRL actor has no tensors {', '.join(extra[:5])}")
    scale = np.asarray(tensors["action_scale"], dtype=np.float32).ravel()
    bias = np.asarray(tensors["action_bias"], dtype=np.float32).ravel()
    if scale.shape != bias.shape or not np.all(np.isfinite(scale)) or not np.all(np.isfinite(bias)):
        raise ImportRefusedError(FIELD, "action_scale and action_bias must be finite vectors of one length")
    if np.any(scale <= 0):
        raise ImportRefusedError(FIELD, "action_scale must be positive")
    layers = [
        dense(tensors["fc1.weight"], tensors["fc1.bias"], Activation.RELU, FIELD),
        dense(tensors["fc2.weight"], tensors["fc2.bias"], Activation.RELU, FIELD),
        dense(tensors["fc_mu.weight"], tensors["fc_mu.bias"], None, FIELD),
    ]
    return build_mlp(
        layers,
        output_transform=OutputTransform.TANH_SCALE,
        action_low=bias - scale,
        action_high=bias + scale,
        origin="cleanrl",
        obs_normalization=obs_normalization,
    )
