"""The policy registry: list, inspect, download the weights, promote to default."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from app.deps import ApiKeyDep, PolicyCacheDep, SessionDep
from app.errors import ApiError
from app.presenters import policy_out
from app.schemas import PolicyList, PolicyOut, error_responses
from store.policies import PolicyNotFoundError, get_policy, get_serving_state, list_policies, promote_policy

router = APIRouter(prefix="/policies", tags=["policies"])

PolicyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The policy's id.")]


@router.get("", response_model=PolicyList, responses=error_responses(422, 503))
def policies(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> PolicyList:
    """Stored policies, newest first, with their evaluation scores; paginated with the total count."""
    page, total = list_policies(session, limit=limit, offset=offset)
    default_id, _ = get_serving_state(session)
    return PolicyList(items=[policy_out(p, default_id) for p in page], total=total, limit=limit, offset=offset)


@router.get("/{policy_id}", response_model=PolicyOut, responses=error_responses(404, 422, 503))
def policy(policy_id: PolicyId, session: SessionDep) -> PolicyOut:
    """One policy: metadata, evaluation score, source job, and whether it is the default."""
    found = get_policy(session, policy_id)
    if found is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    return policy_out(found, get_serving_state(session)[0])


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


@router.post(
    "/{policy_id}/promote",
    response_model=PolicyOut,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 422, 503),
)
async def promote(policy_id: PolicyId, cache: PolicyCacheDep, session: SessionDep) -> PolicyOut:
    """Make the policy the default; every API process serves it within one refresh interval (<= 1 s)."""

    def promote_and_commit() -> PolicyOut:
        try:
            promoted = promote_policy(session, policy_id)
        except PolicyNotFoundError:
            raise ApiError(404, "not_found", f"policy {policy_id} not found") from None
        session.commit()
        return policy_out(promoted, promoted.id)

    result = await asyncio.to_thread(promote_and_commit)
    # This process swaps now (read-your-writes for the caller); the others pick it up on their next poll.
    await cache.refresh()
    return result
