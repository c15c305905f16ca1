"""KServe V1 predict: `{"instances": [observation, ...]}` -> `{"predictions": [action, ...]}`.

The instances are one tensor of shape [n, obs_dim], checked as /act checks its observations.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.serving.observations import check_observation_batch
from app.serving.protocols import (
    ProtocolError,
    act,
    answers_errors,
    check_inference_key,
    json_tensor,
    load_json_object,
    resolve_model,
    runtime_of,
)

INSTANCES = "instances"


@answers_errors
async def predict(request: Request, name: str) -> Response:
    """The answer to `POST /v1/models/{name}:predict`, errors included."""
    runtime = runtime_of(request)
    check_inference_key(request, runtime)
    body = await request.body()
    payload = load_json_object(body)
    if INSTANCES not in payload:
        raise ProtocolError(400, 'expected {"instances": [[...observation...], ...]}')
    loaded = await resolve_model(runtime.cache, name)
    observations = json_tensor(payload[INSTANCES], INSTANCES, body)
    check_observation_batch(observations, loaded.actor.obs_dim, loaded.policy_id, runtime.max_batch, INSTANCES)
    actions = act(runtime, loaded, observations)
    content = orjson.dumps({"predictions": actions}, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type="application/json")
