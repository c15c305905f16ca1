"""`inference.GRPCInferenceService`: the Open Inference Protocol's calls over gRPC, answered as over HTTP.

Every check is the HTTP adapter's (app.serving.inference_v2 and protocols): the same model names (a named model,
`default`, a policy id), versions (policy ids), observation checks, ACT_API_KEY (gRPC metadata
`authorization: Bearer <key>`, on ModelInfer as on HTTP inference) and the same messages. An error the HTTP route
answers with a status is answered here with the gRPC status code of the same meaning (`_STATUS_CODES`), the
message naming the field; a call of the protocol this service does not serve (model repository, statistics) is
UNIMPLEMENTED.

Each call is counted and timed in the HTTP request metrics (`http_requests_total`,
`http_request_duration_seconds`) with method `GRPC`, route `/inference.GRPCInferenceService/<call>` and status the
HTTP status the same answer has over HTTP (200, 400, 401, 404, 503, 500), so one query covers both transports.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from app.grpc_oip.generated import grpc_predict_v2_pb2 as pb
from app.serving.inference_v2 import (
    DATATYPE,
    INPUT_NAME,
    OUTPUT_NAME,
    SERVER_NAME,
    check_input_tensor,
    check_output_name,
    checked_observations,
    metadata_content,
    raw_observations,
)
from app.serving.observations import FloatArray, ObservationError, check_finite
from app.serving.policy_cache import LoadedPolicy
from app.serving.protocols import ProtocolError, act, check_inference_authorization, resolve_model
from app.serving.runtime import ActRuntime

logger = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
# The `method` label of these calls in the request metrics (the HTTP routes have GET, POST, ...).
METRICS_METHOD = "GRPC"
# The HTTP status an error has on the HTTP routes -> the gRPC status code that means the same.
_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
_RAW_INPUT = f"raw_input_contents[0] (input {INPUT_NAME!r})"
_CONTENTS = f"{INPUT_NAME}.contents.fp32_contents"

Response = TypeVar("Response")
Call = Callable[["InferenceService", Any, grpc.aio.ServicerContext], Awaitable[Response]]


def _answered(call: Call[Response]) -> Call[Response]:
    """Decorate a call: its ProtocolError or ObservationError becomes the matching gRPC status, and every call is
    counted and timed in the request metrics."""
    route = f"/{SERVICE_NAME}/{call.__name__}"

    @functools.wraps(call)
    async def answered(service: InferenceService, request: Any, context: grpc.aio.ServicerContext) -> Response:
        start = time.perf_counter()
        trailers: tuple[tuple[str, str], ...] = ()
        try:
            response = await call(service, request, context)
        except ProtocolError as exc:
            status, code, message = exc.status_code, _STATUS_CODES.get(exc.status_code), exc.message
            if exc.headers and "Retry-After" in exc.headers:
                trailers = (("retry-after", exc.headers["Retry-After"]),)
        except ObservationError as exc:
            status, code, message = 400, grpc.StatusCode.INVALID_ARGUMENT, f"{exc.field} {exc.problem}"
        except Exception:
            logger.exception("gRPC %s failed", call.__name__)
            status, code, message = 500, grpc.StatusCode.INTERNAL, "internal error"
        else:
            service.runtime.metrics.observe_request(METRICS_METHOD, route, 200, time.perf_counter() - start)
            return response
        service.runtime.metrics.observe_request(METRICS_METHOD, route, status, time.perf_counter() - start)
        await context.abort(code or grpc.StatusCode.INTERNAL, message, trailing_metadata=trailers)
        raise AssertionError("context.abort returned")  # it raises; this line tells the type checker so

    return answered


class InferenceService:
    """The servicer of `inference.GRPCInferenceService` (registered by app.grpc_oip.server)."""

    def __init__(self, runtime: ActRuntime, server_ready: Callable[[], bool], version: str) -> None:
        self.runtime = runtime
        self.server_ready = server_ready
        self.version = version

    @_answered
    async def ServerLive(  # noqa: N802 (the protocol's name)
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_answered
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.server_ready())

    @_answered
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=[])

    @_answered
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        """Ready, or not ready (no policy yet, not loadable: UNAVAILABLE over ModelInfer); NOT_FOUND for a model or
        version that does not exist."""
        try:
            await self._model(request.name, request.version)
        except ProtocolError as exc:
            if exc.status_code != 503:
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_answered
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        loaded = await self._model(request.name, request.version)
        return pb.ModelMetadataResponse(**metadata_content(request.name, loaded))

    @_answered
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """`observation` [n, obs_dim] FP32 in (contents or raw), `action` [n, act_dim] FP32 out (the same way)."""
        runtime = self.runtime
        check_inference_authorization(_authorization(context), runtime)
        loaded = await self._model(request.model_name, request.model_version, "model_name")
        observations, raw = self._observations(request, loaded)
        for output in request.outputs:
            check_output_name(output.name)
        actions = act(runtime, loaded, observations)
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(loaded.policy_id), id=request.id
        )
        tensor = response.outputs.add(name=OUTPUT_NAME, datatype=DATATYPE, shape=actions.shape)
        if raw:
            response.raw_output_contents.append(actions.astype("<f4", copy=False).tobytes())
        else:
            tensor.contents.fp32_contents.extend(actions.reshape(-1).tolist())
        return response

    async def _model(self, name: str, version: str, field: str = "name") -> LoadedPolicy:
        if not name:
            raise ProtocolError(400, f"{field}: a model name is required (a model, 'default' or a policy id)")
        # proto3 strings cannot be absent: an empty version is the protocol's "the server chooses".
        return await resolve_model(self.runtime.cache, name, version or None)

    def _observations(self, request: pb.ModelInferRequest, loaded: LoadedPolicy) -> tuple[FloatArray, bool]:
        """The validated [n, obs_dim] batch, and whether it came raw (then the actions go back raw too)."""
        if len(request.inputs) != 1:
            raise ProtocolError(400, f"expected `inputs` with exactly one tensor, {INPUT_NAME!r}")
        tensor = request.inputs[0]
        shape = check_input_tensor(tensor.name, tensor.datatype, list(tensor.shape), loaded)
        raw_contents = request.raw_input_contents
        if raw_contents:
            if len(raw_contents) != 1:
                raise ProtocolError(
                    400, f"raw_input_contents must hold one entry per input (1), got {len(raw_contents)}"
                )
            if tensor.HasField("contents"):
                raise ProtocolError(400, f"input {INPUT_NAME!r} has both `contents` and raw_input_contents; send one")
            flat = raw_observations(raw_contents[0], shape, _RAW_INPUT)
            return checked_observations(flat, shape, loaded, self.runtime.max_batch), True
        contents = tensor.contents
        for field, value in contents.ListFields():
            if field.name != "fp32_contents" and value:
                raise ProtocolError(
                    400, f"{INPUT_NAME}.contents.{field.name}: input {INPUT_NAME!r} is {DATATYPE}; send fp32_contents"
                )
        values: FloatArray = np.array(contents.fp32_contents, dtype=np.float32)
        if values.size == 0 and shape[0] * shape[1] != 0:
            raise ProtocolError(400, f"input {INPUT_NAME!r} has no values: set {_CONTENTS} or raw_input_contents")
        check_finite(values, _CONTENTS)
        return checked_observations(values, shape, loaded, self.runtime.max_batch), False


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's `authorization` metadata (gRPC metadata keys are lower case), if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None
