"""The Open Inference Protocol (KServe V2 / Triton) over gRPC, beside its HTTP routes (GRPC_PORT).

`service` answers the protocol's calls on the same lookups, checks, key and metrics as the HTTP adapter
(app.serving.inference_v2); `server` runs a grpc.aio server on the API process's event loop for the app's
lifespan; `generated/` holds the protobuf modules made from `generated/grpc_predict_v2.proto` (`generate`).
"""
