"""Open Inference Protocol V2 (KServe V2, Triton's HTTP protocol): model metadata, readiness and inference.

The input is `observation` (FP32, shape [-1, obs_dim]) and the output `action` (FP32, shape [-1, act_dim]).
Inference also speaks Triton's binary tensor data extension (the `Inference-Header-Content-Length` header),
which tritonclient uses by default: inputs and outputs as raw little-endian FP32 after the JSON header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.serving.observations import FloatArray, check_finite, check_observation_batch
from app.serving.policy_cache import LoadedPolicy
from app.serving.protocols import (
    ProtocolError,
    act,
    answers_errors,
    check_inference_key,
    json_response,
    json_tensor,
    load_json_object,
    resolve_model,
    runtime_of,
)
from app.serving.protocols import model_ready as any_model_ready

INPUT_NAME = "observation"
OUTPUT_NAME = "action"
DATATYPE = "FP32"
PLATFORM = "numpy"
SERVER_NAME = "ddpg-policy-service"
BINARY_HEADER = "inference-header-content-length"
_INPUT = f"input {INPUT_NAME!r}"


@dataclass(frozen=True, slots=True)
class InferInput:
    """A validated V2 inference request: the observations, whether to answer in binary, and the id to echo."""

    observations: FloatArray
    binary_output: bool
    request_id: str | None


@answers_errors
async def model_metadata(request: Request, name: str, version: str | None) -> Response:
    """`{name, versions, platform, inputs, outputs}`, the tensors as `{name, datatype, shape}`."""
    loaded = await resolve_model(runtime_of(request).cache, name, version)
    return json_response(metadata_content(name, loaded))


def metadata_content(name: str, loaded: LoadedPolicy) -> dict[str, Any]:
    """A model's metadata as the protocol spells it (the same fields over HTTP and gRPC)."""
    return {
        "name": name,
        "versions": [str(loaded.policy_id)],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, loaded.actor.obs_dim]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, loaded.actor.act_dim]}],
    }


async def model_ready(request: Request, name: str, version: str | None) -> Response:
    """As KServe V1's, except that `default` without a policy yet is `{"ready": false}` with 400 ("not ready")."""
    if name == "default" and runtime_of(request).cache.default is None:
        return json_response({"name": name, "ready": False}, 400)
    return await any_model_ready(request, name, version)


@answers_errors
async def infer(request: Request, name: str, version: str | None) -> Response:
    """The answer to `POST /v2/models/{name}[/versions/{version}]/infer`, errors included."""
    runtime = runtime_of(request)
    check_inference_key(request, runtime)
    loaded = await resolve_model(runtime.cache, name, version)
    parsed = parse_infer(await request.body(), request.headers.get(BINARY_HEADER), loaded, runtime.max_batch)
    return infer_response(name, loaded, act(runtime, loaded, parsed.observations), parsed)


def parse_infer(body: bytes, header_length: str | None, loaded: LoadedPolicy, max_batch: int) -> InferInput:
    """An inference request (JSON, or a JSON header plus binary tensors) -> the observations and how to answer."""
    binary_part = b""
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise ProtocolError(400, "Inference-Header-Content-Length must be an integer") from None
        if not 0 < json_length <= len(body):
            raise ProtocolError(400, "Inference-Header-Content-Length is outside the request body")
        body, binary_part = body[:json_length], body[json_length:]
    payload = load_json_object(body)
    inputs = payload.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise ProtocolError(400, f"expected `inputs` with exactly one tensor, {INPUT_NAME!r}")
    tensor: dict[str, Any] = inputs[0]
    shape = check_input_tensor(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), loaded)
    count = shape[0] * shape[1]
    parameters = tensor.get("parameters") or {}
    if type(parameters) is not dict:
        raise ProtocolError(400, "input `parameters` must be an object")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int or binary_size != 4 * count:
            raise ProtocolError(400, f"binary {_INPUT} must be {4 * count} bytes of little-endian FP32")
        flat = raw_observations(binary_part, shape, f"binary {_INPUT}")
    else:
        if "data" not in tensor:
            raise ProtocolError(400, f"{_INPUT} has no `data`")
        flat = json_tensor(tensor["data"], f"{INPUT_NAME}.data", body).reshape(-1)
    observations = checked_observations(flat, shape, loaded, max_batch)
    request_id = payload.get("id")
    if request_id is not None and type(request_id) is not str:
        raise ProtocolError(400, "`id` must be a string")
    return InferInput(observations, _wants_binary(payload), request_id)


# ---- the checks every transport of the protocol shares (HTTP here, gRPC in app.grpc_oip) ---------------------


def check_input_tensor(name: object, datatype: object, shape: object, loaded: LoadedPolicy) -> list[int]:
    """The one input tensor's name, datatype and declared shape ([n, obs_dim], checked against the policy later)."""
    if name != INPUT_NAME:
        raise ProtocolError(400, f"unexpected input {name!r}; this model's input is {INPUT_NAME!r}")
    if datatype != DATATYPE:
        raise ProtocolError(400, f"{_INPUT} must have datatype {DATATYPE}, got {datatype!r}")
    if type(shape) is not list or len(shape) != 2 or any(type(d) is not int or d < 0 for d in shape):
        raise ProtocolError(400, f"{_INPUT} must have shape [n, {loaded.actor.obs_dim}], got {shape!r}")
    return shape


def raw_observations(raw: bytes, shape: list[int], what: str) -> FloatArray:
    """Raw little-endian FP32 bytes of a tensor of `shape` -> its flat values, every one finite; `what` names
    where the bytes came from in the error."""
    count = shape[0] * shape[1]
    if len(raw) != 4 * count:
        raise ProtocolError(400, f"{what} must be {4 * count} bytes of little-endian FP32")
    flat: FloatArray = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    check_finite(flat.reshape(shape), INPUT_NAME)  # JSON numbers are checked as they are converted
    return flat


def checked_observations(flat: FloatArray, shape: list[int], loaded: LoadedPolicy, max_batch: int) -> FloatArray:
    """The flat values as the [n, obs_dim] batch the policy takes: as many as the shape says, within MAX_BATCH."""
    count = shape[0] * shape[1]
    if flat.size != count:
        raise ProtocolError(400, f"{_INPUT} has {flat.size} numbers but its shape {shape} needs {count}")
    observations = flat.reshape(shape)
    check_observation_batch(observations, loaded.actor.obs_dim, loaded.policy_id, max_batch, _INPUT)
    return observations


def check_output_name(name: object) -> None:
    """A requested output must be the model's one output."""
    if name != OUTPUT_NAME:
        raise ProtocolError(400, f"unknown output {name!r}; this model's output is {OUTPUT_NAME!r}")


def _wants_binary(payload: dict[str, Any]) -> bool:
    """Outputs as binary data when the request asks (per output, or for all with `binary_data_output`)."""
    outputs = payload.get("outputs")
    request_parameters = payload.get("parameters") or {}
    binary = type(request_parameters) is dict and request_parameters.get("binary_data_output") is True
    if outputs is None:
        return binary
    if type(outputs) is not list or any(type(o) is not dict for o in outputs):
        raise ProtocolError(400, '`outputs` must be a list of {"name": ...} objects')
    for output in outputs:
        check_output_name(output.get("name"))
        output_parameters = output.get("parameters") or {}
        if type(output_parameters) is dict and "binary_data" in output_parameters:
            binary = output_parameters["binary_data"] is True
    return binary


def infer_response(name: str, loaded: LoadedPolicy, actions: FloatArray, parsed: InferInput) -> Response:
    """The inference response: JSON, or a JSON header then the actions as raw FP32 when binary output was asked."""
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(actions.shape)}
    raw = actions.astype("<f4").tobytes() if parsed.binary_output else b""
    if parsed.binary_output:
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = actions.reshape(-1)
    content: dict[str, Any] = {"model_name": name, "model_version": str(loaded.policy_id), "outputs": [output]}
    if parsed.request_id is not None:
        content["id"] = parsed.request_id
    header = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    if not parsed.binary_output:
        return Response(header, media_type="application/json")
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
