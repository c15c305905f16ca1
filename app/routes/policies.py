"""The policy registry: list, inspect, download the weights, watch it in motion, promote to default."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Path
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.infra.errors import found_or_404
from app.infra.http_cache import immutable_response
from app.routes.deps import (
    ApiKeyDep,
    PageDep,
    PolicyCacheDep,
    PolicyFilesDep,
    ReadyDatabaseDep,
    SessionDep,
    SettingsDep,
)
from app.schemas.errors import BINARY_SCHEMA, error_responses, file_responses
from app.schemas.policies import PolicyList, PolicyOut
from app.schemas.registry_views import policy_out, policy_page
from app.services import promotion
from app.services.policy_files import GIF_SEED
from store.policies import get_policy
from store.tables.registry import Policy

router = APIRouter(prefix="/policies", tags=["policies"])

PolicyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The policy's id.")]
IfNoneMatch = Annotated[str | None, Header()]

# What the two files built from a policy are, for the OpenAPI page.
_GIF = "An animated GIF of one Pendulum episode of the policy, with the return on the frames."
_ONNX = (
    "The actor as an ONNX model: input `observation` float32 [batch, obs_dim], output `action` float32 [batch, "
    "act_dim] in the environment's units, clipped to its bounds (what /act answers), observation normalization "
    "included; the weights file's metadata and the weights' sha256 in its metadata properties."
)


def _policy_or_404(session: Session, policy_id: int) -> Policy:
    return found_or_404(get_policy(session, policy_id), "policy", policy_id)


@router.get("", response_model=PolicyList, responses=error_responses(422, 503))
def policies(
    session: SessionDep,
    settings: SettingsDep,
    page: PageDep,
) -> PolicyList:
    """Stored policies of every model, newest first, with their evaluation scores; paginated with the total count."""
    return policy_page(session, settings.default_model, limit=page.limit, offset=page.offset)


@router.get("/{policy_id}", response_model=PolicyOut, responses=error_responses(404, 422, 503))
def policy(policy_id: PolicyId, session: SessionDep, settings: SettingsDep) -> PolicyOut:
    """One policy: metadata, evaluation score, source job, and whether it is the default."""
    return policy_out(session, _policy_or_404(session, policy_id), settings.default_model)


@router.get(
    "/{policy_id}/weights",
    response_class=Response,
    responses=file_responses("application/octet-stream", "The safetensors policy file (ddpg-actor/1 or policy-mlp/1)."),
)
def weights(policy_id: PolicyId, session: SessionDep) -> Response:
    """The policy's actor weights: the safetensors file (`ddpg-actor/1` or `policy-mlp/1`), byte for byte as stored."""
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
    responses=file_responses("image/gif", _GIF, schema=BINARY_SCHEMA, not_modified=True),
)
def rollout_gif(
    policy_id: PolicyId, database: ReadyDatabaseDep, files: PolicyFilesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """One episode of the policy as an animated GIF (rendered once per policy, ~1 s; then cached)."""
    # A sync endpoint on purpose: rendering blocks for about a second, so it runs in the thread pool. The weights
    # are read in a short session of their own: renders take turns (one lock), and a request waiting for its turn
    # must not hold a pooled database connection meanwhile.
    stored = found_or_404(database.policy_weights(policy_id), "policy", policy_id)
    etag = f'"{hashlib.sha256(stored).hexdigest()}-{GIF_SEED}"'
    return immutable_response(etag, if_none_match, lambda: files.episode_gif(policy_id, stored), media_type="image/gif")


@router.get(
    "/{policy_id}/actor.onnx",
    response_class=Response,
    responses=file_responses(
        "application/octet-stream", _ONNX, schema=BINARY_SCHEMA, not_modified=True, errors=(404, 409, 422, 503)
    ),
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
