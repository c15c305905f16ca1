"""The actor as an ONNX model: the served forward pass, bounds included, for runtimes other than this service.

Torch-free on purpose (numpy and the `onnx` package's graph builder only), so the API process can build an
ONNX file from a stored policy without the trainer. The graph mirrors `models.policy.NumpyActor.act` step
by step, so any ONNX runtime returns the action `/act` would, within float32 rounding:

    observation [batch, obs_dim]
      -> Sub(obs_normalization.mean) -> Div(obs_normalization.std) -> Clip   # only with normalization
      -> Gemm(layer) -> activation  ... for each hidden layer (Relu, Tanh, Elu, LeakyRelu)
      -> Gemm(last layer)
      -> Tanh -> Mul(half_range) -> Add(mid)    # tanh_scale: == low + (tanh + 1) / 2 * (high - low)
      -> Max(low) -> Min(high)                  # clip to the bounds, per action dimension
    action [batch, act_dim]

A `ddpg-actor/1` policy gives the graph it always did (layers `linear1`..`linear3`, relu, relu, tanh_scale).
The metadata of the source weights travels in the model's `metadata_props` (strings, lists and dicts
JSON-encoded, exactly as in the safetensors header), plus `source_sha256`, the sha256 of the safetensors bytes
it was built from, which names the policy in the registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.policy_format import POLICY_METADATA_KEYS
from models.policy_types import (
    ELU_ALPHA,
    LEAKY_RELU_SLOPE,
    LEGACY_FORMAT_TAG,
    NORM_MEAN,
    POLICY_FORMAT_TAG,
    Activation,
    OutputTransform,
)
from models.weights import REQUIRED_METADATA, ActorWeights, decode_actor

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
    """An ONNX model's metadata_props are not a set this module writes; the message says why."""


def actor_onnx_model(weights: ActorWeights, *, source_sha256: str) -> onnx.ModelProto:
    """The ONNX graph of the served actor, checked by `onnx.checker` (with shape inference) before it is returned.

    `source_sha256` is the sha256 (lowercase hex) of the safetensors bytes `weights` was decoded from.
    """
    if not _SHA256_HEX.fullmatch(source_sha256):
        raise ValueError(f"source_sha256 must be 64 lowercase hex characters, got {source_sha256!r}")
    legacy = weights.format == LEGACY_FORMAT_TAG
    tensors = weights.tensors
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)
        for name, array in tensors.items()
        if not name.startswith("obs_normalization.")
    ]
    nodes: list[onnx.NodeProto] = []
    hidden = INPUT_NAME
    norm = weights.obs_normalization
    if norm is not None:
        # sqrt(var + epsilon) computed once, in float32, exactly as NumpyActor does, so both divide alike.
        initializers += [
            numpy_helper.from_array(norm.mean, NORM_MEAN),
            numpy_helper.from_array(norm.std(), "obs_normalization.std"),
        ]
        nodes += [
            helper.make_node("Sub", [hidden, NORM_MEAN], ["obs_centered"], name="obs_center"),
            helper.make_node("Div", ["obs_centered", "obs_normalization.std"], ["obs_normalized"], name="obs_scale"),
        ]
        hidden = "obs_normalized"
        if norm.clip is not None:
            clip = np.float32(norm.clip)
            initializers += [
                numpy_helper.from_array(np.array(-clip, np.float32), "obs_clip_low"),
                numpy_helper.from_array(np.array(clip, np.float32), "obs_clip_high"),
            ]
            nodes.append(
                helper.make_node("Clip", [hidden, "obs_clip_low", "obs_clip_high"], ["obs_clipped"], name="obs_clip")
            )
            hidden = "obs_clipped"
    layer_names = [name.removesuffix(".weight") for name in tensors if name.endswith(".weight")]
    for layer_name, layer in zip(layer_names, weights.layers, strict=True):
        node_name = layer_name.replace(".", "_")
        # transB=1 keeps the torch nn.Linear layout [out, in], so the stored tensors go in unchanged.
        nodes.append(
            helper.make_node(
                "Gemm",
                [hidden, f"{layer_name}.weight", f"{layer_name}.bias"],
                [f"{node_name}_out"],
                name=node_name,
                transB=1,
            )
        )
        hidden = f"{node_name}_out"
        if layer.activation is not None:
            op, attributes = _ONNX_ACTIVATIONS[Activation(layer.activation)]
            activated = f"{node_name}_{op.lower()}"
            node = helper.make_node(op, [hidden], [activated], name=activated)
            node.attribute.extend(helper.make_attribute(key, value) for key, value in attributes.items())
            nodes.append(node)
            hidden = activated
    if weights.output == OutputTransform.TANH_SCALE:
        # Computed exactly as NumpyActor does (float32 arithmetic on float32 bounds), so both round alike.
        mid = ((weights.action_high + weights.action_low) / 2).astype(np.float32)
        half_range = ((weights.action_high - weights.action_low) / 2).astype(np.float32)
        initializers += [
            numpy_helper.from_array(half_range, "action_half_range"),
            numpy_helper.from_array(mid, "action_mid"),
        ]
        squashed = f"{hidden.removesuffix('_out')}_tanh"
        nodes += [
            helper.make_node("Tanh", [hidden], [squashed], name=squashed),
            helper.make_node("Mul", [squashed, "action_half_range"], ["scaled"], name="scale"),
            helper.make_node("Add", ["scaled", "action_mid"], ["shifted"], name="shift"),
        ]
        hidden = "shifted"
    initializers += [
        numpy_helper.from_array(weights.action_low.astype(np.float32), "action_low"),
        numpy_helper.from_array(weights.action_high.astype(np.float32), "action_high"),
    ]
    nodes += [
        # Max/Min rather than Clip: Clip takes scalar bounds only, and each action dimension has its own.
        # They also absorb float32 rounding past a bound, as in NumpyActor.act.
        helper.make_node("Max", [hidden, "action_low"], ["above_low"], name="clip_low"),
        helper.make_node("Min", ["above_low", "action_high"], [OUTPUT_NAME], name="clip_high"),
    ]
    graph = helper.make_graph(
        nodes,
        "ddpg_actor" if legacy else "policy_mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, weights.obs_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, weights.act_dim])],
        initializer=initializers,
        doc_string=(
            f"{'DDPG actor' if legacy else f'Policy ({weights.origin})'} for {weights.env_id}: "
            "action within [action_low, action_high] for each observation row"
        ),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER_NAME,
    )
    helper.set_model_props(model, {**weights.metadata_strings(), SOURCE_SHA256_KEY: source_sha256})
    onnx.checker.check_model(model, full_check=True)
    return model


# ONNX's Elu and LeakyRelu take their constant as `alpha`; both defaults are written out, not left to the runtime.
_ONNX_ACTIVATIONS: dict[Activation, tuple[str, dict[str, float]]] = {
    Activation.RELU: ("Relu", {}),
    Activation.TANH: ("Tanh", {}),
    Activation.ELU: ("Elu", {"alpha": ELU_ALPHA}),
    Activation.LEAKY_RELU: ("LeakyRelu", {"alpha": LEAKY_RELU_SLOPE}),
}


def actor_onnx_bytes(weights: ActorWeights, *, source_sha256: str) -> bytes:
    """`actor_onnx_model` serialised; the same weights and sha give the same bytes."""
    data: bytes = actor_onnx_model(weights, source_sha256=source_sha256).SerializeToString(deterministic=True)
    return data


def safetensors_to_onnx(data: bytes) -> bytes:
    """ONNX bytes from policy file bytes (any supported format), through the strict loader.

    Raises `models.weights.WeightsFormatError` for bytes the loader rejects; their sha256 becomes `source_sha256`.
    """
    return actor_onnx_bytes(decode_actor(data), source_sha256=hashlib.sha256(data).hexdigest())


def read_onnx_metadata(model: bytes | onnx.ModelProto) -> dict[str, Any]:
    """The metadata as `ActorWeights.metadata()` gives it (parsed values), plus `source_sha256`.

    Raises OnnxMetadataError when a key is missing or the format tag is neither `ddpg-actor/1` nor `policy-mlp/1`.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    props = {prop.key: prop.value for prop in proto.metadata_props}
    tag = props.get("format")
    if tag not in (LEGACY_FORMAT_TAG, POLICY_FORMAT_TAG):
        if "format" not in props:
            raise OnnxMetadataError("ONNX metadata_props lack required keys: format")
        raise OnnxMetadataError(f"unsupported format {tag!r}; expected {LEGACY_FORMAT_TAG!r} or {POLICY_FORMAT_TAG!r}")
    keys = REQUIRED_METADATA if tag == LEGACY_FORMAT_TAG else POLICY_METADATA_KEYS
    missing = [key for key in (*keys, SOURCE_SHA256_KEY) if key not in props]
    if missing:
        raise OnnxMetadataError(f"ONNX metadata_props lack required keys: {', '.join(missing)}")
    try:
        parsed: dict[str, Any] = {}
        for key in keys:
            raw = props[key]
            if key in _STRING_KEYS:
                parsed[key] = raw
            elif key in ("obs_dim", "act_dim", "hidden_size"):
                parsed[key] = int(raw)
            elif key == "seed":
                parsed[key] = int(raw) if raw else None
            elif key == "eval_mean_return":
                parsed[key] = float(raw) if raw else None
            else:
                parsed[key] = json.loads(raw)
        parsed[SOURCE_SHA256_KEY] = props[SOURCE_SHA256_KEY]
        return parsed
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise OnnxMetadataError(f"ONNX metadata_props hold a malformed value: {exc}") from None


_STRING_KEYS = frozenset({"format", "origin", "env_id", "output", "created_at"})
