"""A model's rollout: start or retune a trial (shadow or canary, with a guard), watch it, end, promote, roll back."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks

from app.routes.deps import JSON_WRITE, ApiKeyDep, ModelNameParam, PolicyCacheDep, SessionDep, SettingsDep
from app.schemas.errors import error_responses
from app.schemas.models import RolloutIn, RolloutOut, RolloutState
from app.schemas.registry_views import rollout_state
from app.services import rollouts
from app.services.model_registry import model_or_404

router = APIRouter(prefix="/models/{name}/rollout", tags=["models"])


@router.put(
    "",
    response_model=RolloutOut,
    dependencies=JSON_WRITE,
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def put_rollout(name: ModelNameParam, body: RolloutIn, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """Start a trial of `challenger`, or retune the active one if it already tries that policy (its figures and
    session split are kept); a trial of another challenger ends, replaced. New sessions follow it at once."""
    return await rollouts.start(session, cache, name, body)


@router.get("", response_model=RolloutState, responses=error_responses(404, 422, 503))
def get_rollout(name: ModelNameParam, session: SessionDep) -> RolloutState:
    """The active rollout with its live figures (mean return and 95% interval per policy, shadow divergence and
    latency), and the recent rollouts with when and why each ended."""
    return rollout_state(session, model_or_404(session, name))


@router.delete(
    "", response_model=RolloutOut, dependencies=[ApiKeyDep], responses=error_responses(401, 404, 409, 422, 503)
)
async def delete_rollout(name: ModelNameParam, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """End the active rollout (`ended`); the champion stays. 409 when there is none."""
    return await rollouts.end(session, cache, name)


@router.post(
    "/promote", response_model=RolloutOut, dependencies=[ApiKeyDep], responses=error_responses(401, 404, 409, 422, 503)
)
async def promote_rollout(
    name: ModelNameParam, session: SessionDep, settings: SettingsDep, cache: PolicyCacheDep, tasks: BackgroundTasks
) -> RolloutOut:
    """Make the challenger the champion (the rollout ends `promoted`); sessions already running keep their policy."""
    return await rollouts.promote(session, cache, settings, tasks, name)


@router.post(
    "/rollback", response_model=RolloutOut, dependencies=[ApiKeyDep], responses=error_responses(401, 404, 409, 422, 503)
)
async def rollback_rollout(name: ModelNameParam, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """End the trial (`rolled_back`): new sessions get the champion only; running ones keep their policy."""
    return await rollouts.roll_back(session, cache, name)
