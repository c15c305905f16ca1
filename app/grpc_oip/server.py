"""The gRPC server of one API process: started by the app's lifespan when GRPC_PORT is set, stopped with it.

It is a grpc.aio server on the process's own event loop, so a call reads the same policy cache, routing and metrics
as the HTTP requests, with no thread between them. With several uvicorn workers, every worker process binds the
same GRPC_PORT: gRPC sets SO_REUSEPORT on Linux (`grpc.so_reuseport`, on by default, set here explicitly), and the
kernel spreads new connections over the processes as it does for the HTTP port. A gRPC connection is long-lived,
so one client's calls all go to one worker; many clients spread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from app.grpc_oip.generated.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from app.grpc_oip.service import InferenceService
from app.serving.runtime import ActRuntime

logger = logging.getLogger(__name__)

# Calls in flight get this long to finish when the process stops (uvicorn gives HTTP requests 10 s).
STOP_GRACE_SECONDS = 5.0


class GrpcPortError(RuntimeError):
    """GRPC_PORT could not be bound (in use by another program, or not allowed)."""


@contextlib.asynccontextmanager
async def serving_grpc(
    *,
    host: str,
    port: int | None,
    runtime: ActRuntime,
    server_ready: Callable[[], bool],
    version: str,
    max_message_bytes: int,
) -> AsyncIterator[None]:
    """Serve `inference.GRPCInferenceService` on host:port for the block (nothing when `port` is None)."""
    if port is None:
        yield
        return
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            # The same bound as an HTTP request body (MAX_BODY_BYTES); the answers are smaller than the requests.
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
    )
    service = InferenceService(runtime, server_ready, version)
    # The generated registration function is untyped.
    add_GRPCInferenceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
        raise GrpcPortError(f"GRPC_PORT: cannot listen on {address}: {exc}") from exc
    await server.start()
    logger.info("Open Inference Protocol over gRPC on %s", address)
    try:
        yield
    finally:
        await server.stop(STOP_GRACE_SECONDS)
