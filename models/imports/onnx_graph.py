"""ONNX models of MLP actors, converted to the neutral MLP description: a chain of dense layers and activations.

Read through the `onnx` package's protobuf schema (no runtime, nothing executed). Supported, in a chain from the one
input to the one output:

    Gemm (transA 0, any transB, alpha/beta folded)  |  MatMul [+ Add bias]       a dense layer
    Relu | Tanh | Elu (alpha 1) | LeakyRelu (alpha 0.01)                        its activation
    Tanh -> Mul(scale) -> Add(offset)                                           tanh_scale to offset -/+ scale
    Clip(min, max) | Max(low) -> Min(high)                                      clip to the bounds
    Identity, Flatten of a [batch, n] tensor                                    nothing
    Sub(mean) -> Div(std) [-> Clip(-c, c)] before the first layer               observation normalization

The last is how this service's own ONNX download normalizes (models.onnx_export), so a downloaded policy imports back.

Anything else is refused with every unsupported operator named. Tensors stored outside the file (external data)
are refused too: resolving them would read paths on this machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp, build_mlp, dense
from models.policy_types import ELU_ALPHA, LEAKY_RELU_SLOPE, Activation, ObsNormalization, OutputTransform
from models.strict_safetensors import WeightsFormatError

FIELD = "file"
SUPPORTED_OPS = frozenset(
    {
        "Gemm",
        "MatMul",
        "Add",
        "Relu",
        "Tanh",
        "Elu",
        "LeakyRelu",
        "Mul",
        "Clip",
        "Max",
        "Min",
        "Identity",
        "Flatten",
        "Sub",
        "Div",
    }
)
_ACTIVATION_OPS = {
    "Relu": Activation.RELU,
    "Tanh": Activation.TANH,
    "Elu": Activation.ELU,
    "LeakyRelu": Activation.LEAKY_RELU,
}
_ALPHA = {"Elu": ELU_ALPHA, "LeakyRelu": LEAKY_RELU_SLOPE}
# A dense layer while the graph is walked: weight [out, in], bias, and the activation after it (None: none seen).
_Layer = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], Activation | None]
_CLOSE = 1e-6


def read_onnx_actor(
    data: bytes,
    *,
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    obs_normalization: ObsNormalization | None = None,
) -> ImportedMlp:
    """The MLP actor of an ONNX graph. `action_low`/`action_high` are the model's bounds, used when the graph has
    no output transform of its own (its output is then clipped to them, as every served action is)."""
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise ImportRefusedError(FIELD, f"not an ONNX model ({exc})") from None
    graph = model.graph
    unsupported = sorted({node.op_type for node in graph.node if node.op_type not in SUPPORTED_OPS or node.domain})
    if unsupported:
        raise ImportRefusedError(
            FIELD,
            f"the ONNX graph uses unsupported operators: {', '.join(unsupported)} "
            f"(an MLP actor uses {', '.join(sorted(SUPPORTED_OPS))})",
            unsupported=tuple(unsupported),
        )
    constants = _constants(graph)
    inputs = [value.name for value in graph.input if value.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ImportRefusedError(
            FIELD, f"the graph must have one input and one output, has {inputs} and {[o.name for o in graph.output]}"
        )
    return _Chain(constants, inputs[0], graph.output[0].name).walk(
        graph.node, action_low, action_high, obs_normalization
    )


def _constants(graph: onnx.GraphProto) -> dict[str, npt.NDArray[Any]]:
    values: dict[str, npt.NDArray[Any]] = {}
    for tensor in graph.initializer:
        values[tensor.name] = _array(tensor)
    for node in graph.node:
        if node.op_type == "Constant":  # not in SUPPORTED_OPS; kept for clarity should it be admitted later
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = _array(attribute.t)
    return values


def _array(tensor: onnx.TensorProto) -> npt.NDArray[Any]:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        raise ImportRefusedError(FIELD, f"tensor {tensor.name!r} is stored outside the file (external data refused)")
    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except (ValueError, TypeError, KeyError) as exc:
        raise ImportRefusedError(FIELD, f"tensor {tensor.name!r} cannot be read ({exc})") from None


class _Chain:
    """Walks the nodes in order, following the one value that flows from the input to the output."""

    def __init__(self, constants: dict[str, npt.NDArray[Any]], input_name: str, output_name: str) -> None:
        self.constants = constants
        self.current = input_name
        self.output_name = output_name
        self.layers: list[_Layer] = []
        self.pending: tuple[npt.NDArray[Any], npt.NDArray[Any]] | None = None  # a dense layer awaiting its activation
        self.tanh_scale: tuple[npt.NDArray[Any], npt.NDArray[Any] | None] | None = None
        self.clip_low: npt.NDArray[Any] | None = None
        self.clip_high: npt.NDArray[Any] | None = None
        # Observation normalization in front of the first layer: Sub(mean) -> Div(std) [-> Clip(-c, c)].
        self.norm_mean: npt.NDArray[np.float32] | None = None
        self.norm_std: npt.NDArray[np.float32] | None = None
        self.norm_clip: float | None = None

    def walk(
        self,
        nodes: Any,
        action_low: npt.ArrayLike,
        action_high: npt.ArrayLike,
        obs_normalization: ObsNormalization | None,
    ) -> ImportedMlp:
        for node in nodes:
            if node.op_type == "Constant":
                continue
            flowing = [name for name in node.input if name and name not in self.constants]
            if flowing != [self.current] or len(node.output) != 1:
                raise ImportRefusedError(
                    FIELD, f"node {node.name or node.op_type!r} is not part of one chain from input to output"
                )
            values = [self.constants.get(name) for name in node.input]
            if not self._normalizing(node, values):
                self._step(node, values)
            self.current = node.output[0]
        if self.current != self.output_name:
            raise ImportRefusedError(FIELD, "the chain of nodes does not end at the graph's output")
        self._finish_pending(None)
        if not self.layers:
            raise ImportRefusedError(FIELD, "the graph has no dense layer")
        obs_normalization = self._normalization(obs_normalization)
        low = np.asarray(action_low, dtype=np.float32)
        high = np.asarray(action_high, dtype=np.float32)
        output = OutputTransform.CLIP
        *hidden, (last_weight, last_bias, last_activation) = self.layers
        if self.tanh_scale is not None:
            scale, offset = self.tanh_scale
            offset_values = np.zeros_like(scale) if offset is None else offset
            low, high = offset_values - scale, offset_values + scale
            output = OutputTransform.TANH_SCALE
        elif last_activation is not None:
            raise ImportRefusedError(
                FIELD, f"the graph ends in {last_activation} without scaling it to the bounds (Mul, Add) or a Clip"
            )
        layers = [dense(w, b, a, FIELD) for w, b, a in hidden] if all(a for _, _, a in hidden) else None
        if layers is None:
            raise ImportRefusedError(FIELD, "two dense layers follow each other without an activation")
        layers.append(dense(last_weight, last_bias, None, FIELD))
        for name, bound, expected in (("low", self.clip_low, low), ("high", self.clip_high, high)):
            if (
                bound is not None
                and output == OutputTransform.TANH_SCALE
                and not np.allclose(np.broadcast_to(bound, expected.shape), expected, atol=_CLOSE, rtol=_CLOSE)
            ):
                raise ImportRefusedError(
                    FIELD,
                    f"the graph clips to {name} {bound.tolist()} after scaling to "
                    f"{expected.tolist()}; one set of bounds is served",
                )
        if output == OutputTransform.CLIP:
            act_dim = layers[-1].out_features
            if self.clip_low is not None:
                low = np.maximum(low, np.broadcast_to(self.clip_low, (act_dim,)))
            if self.clip_high is not None:
                high = np.minimum(high, np.broadcast_to(self.clip_high, (act_dim,)))
        return build_mlp(
            layers,
            output_transform=output,
            action_low=low,
            action_high=high,
            origin="onnx",
            obs_normalization=obs_normalization,
        )

    def _normalization(self, given: ObsNormalization | None) -> ObsNormalization | None:
        if self.norm_mean is None:
            return given
        if given is not None:
            raise ImportRefusedError("obs_normalization", "the ONNX graph normalizes its observations already")
        if self.norm_std is None:
            raise ImportRefusedError(FIELD, "the graph subtracts from the observation but does not divide it")
        obs_dim = int(self.layers[0][0].shape[1])
        mean = np.broadcast_to(self.norm_mean, (obs_dim,)).astype(np.float32)
        std = np.broadcast_to(self.norm_std, (obs_dim,)).astype(np.float32)
        if not np.all(std > 0):
            raise ImportRefusedError(FIELD, "the graph divides the observation by a non-positive number")
        try:
            # sqrt(var + epsilon) with epsilon 0 gives the graph's std back.
            return ObsNormalization(mean, np.square(std), clip=self.norm_clip, epsilon=0.0)
        except WeightsFormatError as exc:
            raise ImportRefusedError(FIELD, str(exc)) from None

    def _normalizing(self, node: Any, values: list[npt.NDArray[Any] | None]) -> bool:
        """Consume a node of the observation normalization in front of the first layer; False when it is not one."""
        if self.layers or self.pending is not None or node.op_type not in ("Sub", "Div", "Clip"):
            return False
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Sub" and self.norm_mean is None and values[1] is not None:
            self.norm_mean = self._constant(node, values, "mean")
            return True
        if op == "Div" and self.norm_mean is not None and self.norm_std is None and values[1] is not None:
            self.norm_std = self._constant(node, values, "standard deviation")
            return True
        if op == "Clip" and self.norm_std is not None and self.norm_clip is None:
            low, high = _clip_bounds(node, values, attributes)
            if low.size != 1 or high.size != 1 or float(low) != -float(high) or not float(high) > 0:
                raise ImportRefusedError(FIELD, f"Clip node {node.name!r} of the observation must be symmetric")
            self.norm_clip = float(high)
            return True
        return False

    def _constant(self, node: Any, values: list[npt.NDArray[Any] | None], what: str) -> npt.NDArray[Any]:
        found = [value for value in values if value is not None]
        if len(found) != 1:
            raise ImportRefusedError(FIELD, f"{node.op_type} node {node.name!r} needs one constant {what}")
        return np.asarray(found[0], dtype=np.float32)

    def _after_output_transform(self, node: Any) -> None:
        if self.tanh_scale is not None or self.clip_low is not None or self.clip_high is not None:
            raise ImportRefusedError(FIELD, f"{node.op_type} node {node.name!r} comes after the output transform")

    def _step(self, node: Any, values: list[npt.NDArray[Any] | None]) -> None:
        op = node.op_type
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op in ("Sub", "Div"):
            raise ImportRefusedError(FIELD, f"{op} node {node.name!r} is only supported to normalize the observation")
        if op in ("Identity", "Flatten"):
            if op == "Flatten" and attributes.get("axis", 1) != 1:
                raise ImportRefusedError(FIELD, f"Flatten node {node.name!r} must flatten from axis 1")
            return
        if op in ("Gemm", "MatMul"):
            self._after_output_transform(node)
            self._finish_pending(None)
            weight = values[1]
            if weight is None or values[0] is not None:
                raise ImportRefusedError(FIELD, f"{op} node {node.name!r} must multiply the input by a constant")
            weight = np.asarray(weight, dtype=np.float32)
            if weight.ndim != 2:
                raise ImportRefusedError(FIELD, f"{op} node {node.name!r} has a {weight.ndim}-D weight")
            if op == "Gemm":
                if attributes.get("transA", 0) != 0:
                    raise ImportRefusedError(FIELD, f"Gemm node {node.name!r} transposes its input (transA)")
                weight = weight if attributes.get("transB", 0) == 1 else weight.T
                weight = weight * np.float32(attributes.get("alpha", 1.0))
                bias = np.zeros(weight.shape[0], np.float32)
                if len(values) > 2 and values[2] is not None:
                    bias = np.broadcast_to(values[2] * np.float32(attributes.get("beta", 1.0)), bias.shape).copy()
            else:
                weight = weight.T
                bias = np.zeros(weight.shape[0], np.float32)
            self.pending = (np.ascontiguousarray(weight), bias.astype(np.float32))
            return
        if op in _ACTIVATION_OPS:
            self._after_output_transform(node)
            expected_alpha = _ALPHA.get(op)
            if expected_alpha is not None and not np.isclose(attributes.get("alpha", expected_alpha), expected_alpha):
                raise ImportRefusedError(
                    FIELD, f"{op} node {node.name!r} has alpha {attributes['alpha']}; {expected_alpha} is supported"
                )
            if self.pending is None:
                raise ImportRefusedError(FIELD, f"{op} node {node.name!r} does not follow a dense layer")
            self._finish_pending(_ACTIVATION_OPS[op])
            return
        if op == "Add" and self.pending is not None:
            weight, bias = self.pending
            addend = self._constant(node, values, "bias")
            self.pending = (weight, (bias + np.broadcast_to(addend, bias.shape)).astype(np.float32))
            return
        if op == "Mul":
            if self.pending is not None or not self.layers or self.layers[-1][2] != Activation.TANH:
                raise ImportRefusedError(FIELD, f"Mul node {node.name!r} must scale a final Tanh")
            if self.tanh_scale is not None or self.clip_low is not None:
                raise ImportRefusedError(FIELD, f"Mul node {node.name!r} comes after the output transform")
            act_dim = int(self.layers[-1][0].shape[0])
            scale = np.broadcast_to(self._constant(node, values, "scale"), (act_dim,)).astype(np.float32)
            self.tanh_scale = (scale, None)
            return
        if op == "Add":
            if self.tanh_scale is None or self.tanh_scale[1] is not None or self.clip_low is not None:
                raise ImportRefusedError(FIELD, f"Add node {node.name!r} must follow a dense layer or a tanh scale")
            scale = self.tanh_scale[0]
            offset = np.broadcast_to(self._constant(node, values, "offset"), scale.shape).astype(np.float32)
            self.tanh_scale = (scale, offset)
            return
        self._finish_pending(None)
        if op == "Clip":
            self.clip_low, self.clip_high = _clip_bounds(node, values, attributes)
        elif op == "Max":
            self.clip_low = self._constant(node, values, "lower bound")
        elif op == "Min":
            self.clip_high = self._constant(node, values, "upper bound")

    def _finish_pending(self, activation: Activation | None) -> None:
        if self.pending is not None:
            weight, bias = self.pending
            self.layers.append((weight, bias, activation))
            self.pending = None


def _clip_bounds(
    node: Any, values: list[npt.NDArray[Any] | None], attributes: dict[str, Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    low, high = (values[1] if len(values) > 1 else None), (values[2] if len(values) > 2 else None)
    if "min" in attributes or "max" in attributes:  # opset < 11 keeps them as attributes
        low, high = np.asarray(attributes.get("min", -np.inf)), np.asarray(attributes.get("max", np.inf))
    if low is None or high is None:
        raise ImportRefusedError(FIELD, f"Clip node {node.name!r} needs constant min and max")
    return np.asarray(low, np.float32), np.asarray(high, np.float32)
