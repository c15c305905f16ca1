"""A learner's checkpoint: every tensor it needs to go on where it stopped, as safetensors, and its counters as JSON.

Tensors: `actor.*`, `critic.*`, `actor_target.*`, `critic_target.*` (the networks' state_dicts) and
`actor_optimizer.{i}.exp_avg` / `.exp_avg_sq` (and the critic's) for Adam's moments of parameter i. Metadata:
`format` (FORMAT) and `state`, a JSON object with the counters, the cursor, Adam's step per parameter and the
sampling generator's state. Nothing is pickled: the loader reads tensors and JSON only, and a file whose tensors do
not fit the networks is refused by `load_state_dict(strict=True)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from trainer.adam import FusedAdam
from trainer.agent import DDPGAgent

FORMAT = "ddpg-learner-checkpoint/1"
_NETWORKS = ("actor", "critic", "actor_target", "critic_target")
_OPTIMIZERS = ("actor_optimizer", "critic_optimizer")


class CheckpointFormatError(ValueError):
    """The bytes are not a learner checkpoint that fits these networks; the message says why."""


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """The counters a resumed learner continues from."""

    transitions_consumed: int
    updates: int
    cursor: int
    publishes: int
    rng_state: dict[str, Any]


def encode_checkpoint(agent: DDPGAgent, state: CheckpointState) -> bytes:
    tensors: dict[str, npt.NDArray[np.float32]] = {}
    for name in _NETWORKS:
        network: torch.nn.Module = getattr(agent, name)
        for key, tensor in network.state_dict().items():
            tensors[f"{name}.{key}"] = tensor.detach().numpy().copy()
    steps: dict[str, dict[str, float]] = {}
    for name in _OPTIMIZERS:
        optimizer: FusedAdam = getattr(agent, name)
        steps[name] = {}
        for index, moments in enumerate(optimizer.moments):
            tensors[f"{name}.{index}.exp_avg"] = moments.exp_avg.detach().numpy().copy()
            tensors[f"{name}.{index}.exp_avg_sq"] = moments.exp_avg_sq.detach().numpy().copy()
            steps[name][str(index)] = float(moments.step)
    meta = {
        "transitions_consumed": state.transitions_consumed,
        "updates": state.updates,
        "cursor": state.cursor,
        "publishes": state.publishes,
        "rng_state": state.rng_state,
        "adam_steps": steps,
    }
    return bytes(st_save(tensors, metadata={"format": FORMAT, "state": json.dumps(meta, sort_keys=True)}))


def restore_checkpoint(agent: DDPGAgent, data: bytes) -> CheckpointState:
    """Load the checkpoint into `agent` (built with the same sizes) and return its counters."""
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError) as exc:
        raise CheckpointFormatError(f"not a safetensors file: {exc}") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CheckpointFormatError(f"not a {FORMAT} file (format {meta.get('format')!r})")
    try:
        state = json.loads(meta["state"])
        for name in _NETWORKS:
            prefix = f"{name}."
            network: torch.nn.Module = getattr(agent, name)
            own = {k[len(prefix) :]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}
            network.load_state_dict(own, strict=True)
        for name in _OPTIMIZERS:
            optimizer: FusedAdam = getattr(agent, name)
            # A checkpoint lists the parameters Adam had stepped (all of them, once the learner has updated).
            for index, step in state["adam_steps"][name].items():
                optimizer.load_moments(
                    int(index),
                    exp_avg=torch.from_numpy(tensors[f"{name}.{index}.exp_avg"]),
                    exp_avg_sq=torch.from_numpy(tensors[f"{name}.{index}.exp_avg_sq"]),
                    step=float(step),
                )
        return CheckpointState(
            transitions_consumed=int(state["transitions_consumed"]),
            updates=int(state["updates"]),
            cursor=int(state["cursor"]),
            publishes=int(state["publishes"]),
            rng_state=dict(state["rng_state"]),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(f"checkpoint does not fit the learner: {exc}") from None
