"""The actor as an ONNX model: the served forward pass, bounds included, for runtimes other than this service.

Torch-free on purpose (numpy and the `onnx` package's graph builder only), so the API process can build an
ONNX file from a stored policy without the trainer. The graph mirrors `models.policy.NumpyActor.act` step
by step, so any ONNX runtime returns the action `/act` would, within float32 rounding:

    observation [batch, obs_dim]
      -> Gemm(linear1) -> Relu -> Gemm(linear2) -> Relu -> Gemm(linear3) -> Tanh
      -> Mul(half_range) -> Add(mid)            # == low + (tanh + 1) / 2 * (high - low)
      -> Max(low) -> Min(high)                  # clip to the bounds, per action dimension
    action [batch, act_dim]

The `ddpg-actor/1` metadata of the source weights travels in the model's `metadata_props` (strings, lists and
dicts JSON-encoded, exactly as in the safetensors header), plus `source_sha256`, the sha256 of the safetensors
bytes it was built from, which names the policy in the registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.weights import FORMAT_TAG, REQUIRED_METADATA, TENSOR_NAMES, ActorWeights, decode_actor

# Opset 21 with IR version 10 (onnx 1.16): recent enough for every op used here, old enough that any
# onnxruntime from 1.18 on loads it. make_model would otherwise stamp the installed onnx's newest IR
# version, which older runtimes refuse.
OPSET_VERSION = 21
IR_VERSION = 10
INPUT_NAME = "observation"
OUTPUT_NAME = "action"
BATCH_AXIS = "batch"
SOURCE_SHA256_KEY = "source_sha256"
PRODUCER_NAME = "ddpg-policy-service"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class OnnxMetadataError(ValueError):
    """An ONNX model's metadata_props are not the `ddpg-actor/1` set this module writes; the message says why."""


def actor_onnx_model(weights: ActorWeights, *, source_sha256: str) -> onnx.ModelProto:
    """The ONNX graph of the served actor, checked by `onnx.checker` (with shape inference) before it is returned.

    `source_sha256` is the sha256 (lowercase hex) of the safetensors bytes `weights` was decoded from.
    """
    if not _SHA256_HEX.fullmatch(source_sha256):
        raise ValueError(f"source_sha256 must be 64 lowercase hex characters, got {source_sha256!r}")
    t = weights.tensors
    low = weights.action_low.astype(np.float32)
    high = weights.action_high.astype(np.float32)
    # Computed exactly as NumpyActor does (float32 arithmetic on float32 bounds), so both round alike.
    mid = ((weights.action_high + weights.action_low) / 2).astype(np.float32)
    half_range = ((weights.action_high - weights.action_low) / 2).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(t[name], dtype=np.float32), name) for name in TENSOR_NAMES
    ]
    initializers += [
        numpy_helper.from_array(half_range, "action_half_range"),
        numpy_helper.from_array(mid, "action_mid"),
        numpy_helper.from_array(low, "action_low"),
        numpy_helper.from_array(high, "action_high"),
    ]
    nodes: list[onnx.NodeProto] = []
    hidden = INPUT_NAME
    for index in (1, 2, 3):
        layer = f"linear{index}"
        # transB=1 keeps the torch nn.Linear layout [out, in], so the stored tensors go in unchanged.
        nodes.append(
            helper.make_node(
                "Gemm", [hidden, f"{layer}.weight", f"{layer}.bias"], [f"{layer}_out"], name=layer, transB=1
            )
        )
        activation = "Relu" if index < 3 else "Tanh"
        hidden = f"{layer}_{activation.lower()}"
        nodes.append(helper.make_node(activation, [f"{layer}_out"], [hidden], name=f"{layer}_{activation.lower()}"))
    nodes += [
        helper.make_node("Mul", [hidden, "action_half_range"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "action_mid"], ["shifted"], name="shift"),
        # Max/Min rather than Clip: Clip takes scalar bounds only, and each action dimension has its own.
        # They also absorb float32 rounding past a bound, as in NumpyActor.act.
        helper.make_node("Max", ["shifted", "action_low"], ["above_low"], name="clip_low"),
        helper.make_node("Min", ["above_low", "action_high"], [OUTPUT_NAME], name="clip_high"),
    ]
    graph = helper.make_graph(
        nodes,
        "ddpg_actor",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, weights.obs_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, weights.act_dim])],
        initializer=initializers,
        doc_string=(
            f"DDPG actor for {weights.env_id}: action within [action_low, action_high] for each observation row"
        ),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER_NAME,
    )
    helper.set_model_props(model, {**_metadata_strings(weights), SOURCE_SHA256_KEY: source_sha256})
    onnx.checker.check_model(model, full_check=True)
    return model


def actor_onnx_bytes(weights: ActorWeights, *, source_sha256: str) -> bytes:
    """`actor_onnx_model` serialised; the same weights and sha give the same bytes."""
    data: bytes = actor_onnx_model(weights, source_sha256=source_sha256).SerializeToString(deterministic=True)
    return data


def safetensors_to_onnx(data: bytes) -> bytes:
    """ONNX bytes from `ddpg-actor/1` safetensors bytes, through the strict loader.

    Raises `models.weights.WeightsFormatError` for bytes the loader rejects; their sha256 becomes `source_sha256`.
    """
    return actor_onnx_bytes(decode_actor(data), source_sha256=hashlib.sha256(data).hexdigest())


def read_onnx_metadata(model: bytes | onnx.ModelProto) -> dict[str, Any]:
    """The metadata as `ActorWeights.metadata()` gives it (parsed values), plus `source_sha256`.

    Raises OnnxMetadataError when a key is missing or the format tag is not `ddpg-actor/1`.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    props = {prop.key: prop.value for prop in proto.metadata_props}
    missing = [key for key in (*REQUIRED_METADATA, SOURCE_SHA256_KEY) if key not in props]
    if missing:
        raise OnnxMetadataError(f"ONNX metadata_props lack required keys: {', '.join(missing)}")
    if props["format"] != FORMAT_TAG:
        raise OnnxMetadataError(f"unsupported format {props['format']!r}; expected {FORMAT_TAG!r}")
    try:
        return {
            "format": props["format"],
            "env_id": props["env_id"],
            "obs_dim": int(props["obs_dim"]),
            "act_dim": int(props["act_dim"]),
            "hidden_size": int(props["hidden_size"]),
            "action_low": json.loads(props["action_low"]),
            "action_high": json.loads(props["action_high"]),
            "config": json.loads(props["config"]),
            "seed": int(props["seed"]) if props["seed"] else None,
            "eval_mean_return": float(props["eval_mean_return"]) if props["eval_mean_return"] else None,
            "created_at": props["created_at"],
            SOURCE_SHA256_KEY: props[SOURCE_SHA256_KEY],
        }
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise OnnxMetadataError(f"ONNX metadata_props hold a malformed value: {exc}") from None


def _metadata_strings(weights: ActorWeights) -> dict[str, str]:
    """The metadata encoded as the safetensors header encodes it (models.weights.encode_actor)."""
    meta: Mapping[str, Any] = weights.metadata()
    return {
        "format": FORMAT_TAG,
        "env_id": weights.env_id,
        "obs_dim": str(weights.obs_dim),
        "act_dim": str(weights.act_dim),
        "hidden_size": str(weights.hidden_size),
        "action_low": json.dumps(meta["action_low"]),
        "action_high": json.dumps(meta["action_high"]),
        "config": json.dumps(weights.config, sort_keys=True),
        "seed": "" if weights.seed is None else str(weights.seed),
        "eval_mean_return": "" if weights.eval_mean_return is None else repr(float(weights.eval_mean_return)),
        "created_at": weights.created_at,
    }
