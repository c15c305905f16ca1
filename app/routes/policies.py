"""The policy registry: list, inspect, download the weights, watch it in motion, promote to default."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query
from starlette.responses import Response

from app.infra.errors import ApiError
from app.infra.mlflow_alias import champion_run_id, point_champion_alias
from app.routes.deps import ApiKeyDep, DatabaseDep, PolicyCacheDep, SessionDep, SettingsDep
from app.schemas.errors import error_responses
from app.schemas.policies import DEFAULT_POLICY_ID, PolicyList, PolicyOut
from app.serving.onnx_cache import OnnxCache, StoredWeightsMismatchError
from models.rollout import RenderUnavailableError, rollout_gif_for_weights
from models.weights import WeightsFormatError
from store.policies import PolicyNotFoundError, get_policy, get_serving_state, list_policies, promote_policy

router = APIRouter(prefix="/policies", tags=["policies"])

PolicyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The policy's id.")]


@router.get("", response_model=PolicyList, responses=error_responses(422, 503))
def policies(
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> PolicyList:
    """Stored policies of every model, newest first, with their evaluation scores; paginated with the total count."""
    page, total = list_policies(session, limit=limit, offset=offset)
    context = {DEFAULT_POLICY_ID: get_serving_state(session, settings.default_model)[0]}
    items = [PolicyOut.model_validate(row, context=context) for row in page]
    return PolicyList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{policy_id}", response_model=PolicyOut, responses=error_responses(404, 422, 503))
def policy(policy_id: PolicyId, session: SessionDep, settings: SettingsDep) -> PolicyOut:
    """One policy: metadata, evaluation score, source job, and whether it is the default."""
    found = get_policy(session, policy_id)
    if found is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    default_id = get_serving_state(session, settings.default_model)[0]
    return PolicyOut.model_validate(found, context={DEFAULT_POLICY_ID: default_id})


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
    found = get_policy(session, policy_id)
    if found is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    return Response(
        found.weights,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="policy-{policy_id}.safetensors"',
            "ETag": f'"{found.sha256}"',
        },
    )


# A stored policy never changes (its bytes have a sha256), so its GIF may be cached; ids are only reused after a
# database reset, and the ETag (the weights' hash) catches that on revalidation.
ROLLOUT_CACHE_CONTROL = "public, max-age=3600"
# One fixed episode per policy: a seed parameter would let clients fill the render cache with one-offs.
ROLLOUT_SEED = 0


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (`*`, `"a", W/"b"`)."""
    if if_none_match is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


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
    policy_id: PolicyId,
    database: DatabaseDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One episode of the policy as an animated GIF (rendered once per policy, ~1 s; then cached)."""
    # A sync endpoint on purpose: rendering blocks for about a second, so it runs in the thread pool.
    if not database.prepared.is_set():
        raise ApiError(503, "database_unavailable", "the database is not ready yet", headers={"Retry-After": "5"})
    # Read the weights in a short session of its own: renders take turns (one lock), and a request waiting
    # for its turn must not hold a pooled database connection meanwhile.
    weights = database.policy_weights(policy_id)
    if weights is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    etag = f'"{hashlib.sha256(weights).hexdigest()}-{ROLLOUT_SEED}"'
    headers = {"ETag": etag, "Cache-Control": ROLLOUT_CACHE_CONTROL}
    if _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    try:
        gif = rollout_gif_for_weights(weights, seed=ROLLOUT_SEED)
    except RenderUnavailableError as exc:
        raise ApiError(503, "render_unavailable", str(exc)) from None
    except WeightsFormatError:
        raise ApiError(503, "policy_unavailable", f"policy {policy_id} has invalid stored weights") from None
    except ValueError as exc:  # e.g. a policy whose dimensions do not fit its own environment
        raise ApiError(422, "not_renderable", f"policy {policy_id} cannot be rendered: {exc}") from None
    return Response(gif, media_type="image/gif", headers=headers)


# One per process: models are keyed by content, so every app in the process may share them.
_ONNX_MODELS = OnnxCache()


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
    policy_id: PolicyId, session: SessionDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """The policy as an ONNX model that runs anywhere onnxruntime does, scaling and clipping included."""
    found = get_policy(session, policy_id)
    if found is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    etag = f'"{found.sha256}-onnx"'
    headers = {"ETag": etag, "Cache-Control": ROLLOUT_CACHE_CONTROL}
    if _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    try:
        model = _ONNX_MODELS.model_for(found.weights, found.sha256)
    except (StoredWeightsMismatchError, WeightsFormatError) as exc:
        # Never serve a model of bytes that are not the ones registered (tampered or truncated in storage).
        raise ApiError(409, "policy_corrupt", f"policy {policy_id}'s stored weights are invalid: {exc}") from None
    headers["Content-Disposition"] = f'attachment; filename="policy-{policy_id}.onnx"'
    return Response(model, media_type="application/octet-stream", headers=headers)


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

    def promote_and_commit() -> tuple[PolicyOut, str | None]:
        try:
            promoted = promote_policy(session, policy_id)
        except PolicyNotFoundError:
            raise ApiError(404, "not_found", f"policy {policy_id} not found") from None
        # Read in the same transaction: on SQLite a read after the commit would begin a new (write-locking) one.
        run_id = champion_run_id(session, promoted)
        default_id = get_serving_state(session, settings.default_model)[0]  # this one, unless of another model
        out = PolicyOut.model_validate(promoted, context={DEFAULT_POLICY_ID: default_id})
        session.commit()
        return out, run_id

    result, run_id = await asyncio.to_thread(promote_and_commit)
    # This process swaps now (read-your-writes for the caller); the others pick it up on their next poll.
    await cache.refresh()
    tasks.add_task(point_champion_alias, settings, run_id, policy_id)  # after the answer: the tracker may be slow
    return result
