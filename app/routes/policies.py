"""The policy registry: list, inspect, download the weights, watch it in motion, promote to default."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.infra.errors import ApiError
from app.infra.http_cache import immutable_response
from app.routes.deps import ApiKeyDep, PolicyCacheDep, PolicyFilesDep, ReadyDatabaseDep, SessionDep, SettingsDep
from app.schemas.errors import error_responses
from app.schemas.policies import PolicyList, PolicyOut
from app.schemas.registry_views import policy_out, policy_page
from app.services import promotion
from app.services.policy_files import GIF_SEED
from store.policies import get_policy
from store.tables import Policy

router = APIRouter(prefix="/policies", tags=["policies"])

PolicyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The policy's id.")]
IfNoneMatch = Annotated[str | None, Header()]


def _policy_or_404(session: Session, policy_id: int) -> Policy:
    found = get_policy(session, policy_id)
    if found is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    return found


@router.get("", response_model=PolicyList, responses=error_responses(422, 503))
def policies(
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> PolicyList:
    """Stored policies of every model, newest first, with their evaluation scores; paginated with the total count."""
    return policy_page(session, settings.default_model, limit=limit, offset=offset)


@router.get("/{policy_id}", response_model=PolicyOut, responses=error_responses(404, 422, 503))
def policy(policy_id: PolicyId, session: SessionDep, settings: SettingsDep) -> PolicyOut:
    """One policy: metadata, evaluation score, source job, and whether it is the default."""
    return policy_out(session, _policy_or_404(session, policy_id), settings.default_model)


@router.get(
    "/{policy_id}/weights",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The ddpg-actor/1 safetensors file."},
        **error_responses(404, 422, 503),
    },
)
def weights(policy_id: PolicyId, session: SessionDep) -> Response:
    """The policy's actor weights: the `ddpg-actor/1` safetensors file, byte for byte as stored."""
    found = _policy_or_404(session, policy_id)
    return Response(
        found.weights,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="policy-{policy_id}.safetensors"',
            "ETag": f'"{found.sha256}"',
        },
    )


@router.get(
    "/{policy_id}/rollout.gif",
    response_class=Response,
    responses={
        200: {
            "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
            "description": "An animated GIF of one Pendulum episode of the policy, with the return on the frames.",
        },
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **error_responses(404, 422, 503),
    },
)
def rollout_gif(
    policy_id: PolicyId, database: ReadyDatabaseDep, files: PolicyFilesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """One episode of the policy as an animated GIF (rendered once per policy, ~1 s; then cached)."""
    # A sync endpoint on purpose: rendering blocks for about a second, so it runs in the thread pool. The weights
    # are read in a short session of their own: renders take turns (one lock), and a request waiting for its turn
    # must not hold a pooled database connection meanwhile.
    stored = database.policy_weights(policy_id)
    if stored is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    etag = f'"{hashlib.sha256(stored).hexdigest()}-{GIF_SEED}"'
    return immutable_response(etag, if_none_match, lambda: files.episode_gif(policy_id, stored), media_type="image/gif")


@router.get(
    "/{policy_id}/actor.onnx",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The actor as an ONNX model: input `observation` float32 [batch, obs_dim], output "
            "`action` float32 [batch, act_dim] in the environment's units, clipped to its bounds (what /act "
            "answers); the ddpg-actor/1 metadata and the weights' sha256 in its metadata properties.",
        },
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **error_responses(404, 409, 422, 503),
    },
)
def actor_onnx(
    policy_id: PolicyId, session: SessionDep, files: PolicyFilesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The policy as an ONNX model that runs anywhere onnxruntime does, scaling and clipping included."""
    found = _policy_or_404(session, policy_id)
    return immutable_response(
        f'"{found.sha256}-onnx"',
        if_none_match,
        lambda: files.actor_onnx(found),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="policy-{policy_id}.onnx"'},
    )


@router.post(
    "/{policy_id}/promote",
    response_model=PolicyOut,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 422, 503),
)
async def promote(
    policy_id: PolicyId, cache: PolicyCacheDep, session: SessionDep, settings: SettingsDep, tasks: BackgroundTasks
) -> PolicyOut:
    """Make the policy its model's champion (of the default model: the default); every API process serves it
    within one refresh interval (<= 1 s). Sessions already running keep their policy until their episode ends."""
    return await promotion.promote_policy(session, cache, settings, tasks, policy_id)
