"""A model's rollout: start or retune a trial (shadow or canary, with a guard), watch it, end, promote, roll back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from sqlalchemy.orm import Session

from app.infra.errors import ApiError, field_error
from app.routes.deps import ApiKeyDep, PolicyCacheDep, SessionDep, require_json_content_type
from app.schemas.errors import error_responses
from app.schemas.models import RolloutIn, RolloutOut, RolloutState
from app.serving.model_views import rollout_out, rollout_state
from models.registry_vocabulary import NAME_MAX_LENGTH
from store import registry, rollouts
from store.tables import Model, Rollout

router = APIRouter(prefix="/models/{name}/rollout", tags=["models"])

ModelNameParam = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LENGTH, description="The model's name.")]


def _model(session: Session, name: str) -> Model:
    model = registry.get_model(session, name)
    if model is None:
        message = f"no model named {name!r}"
        raise ApiError(404, "not_found", f"name: {message}", details=[{"field": "name", "message": message}])
    return model


def _no_rollout(exc: rollouts.NoActiveRolloutError) -> ApiError:
    return ApiError(409, "conflict", str(exc))


async def _change(
    session: Session, cache: PolicyCacheDep, name: str, change: Callable[[Session, Model], Rollout]
) -> RolloutOut:
    """Apply `change` to the model's rollout in one transaction, answer the rollout, and route by it at once here."""

    def write() -> RolloutOut:
        model = _model(session, name)
        try:
            rollout = change(session, model)
        except registry.RegistryInputError as exc:
            session.rollback()
            raise field_error(exc.field, exc.message) from None
        except rollouts.NoActiveRolloutError as exc:
            session.rollback()
            raise _no_rollout(exc) from None
        # Read before the commit: on SQLite a read after it would begin a transaction holding the write lock until
        # the request ends, and the cache refresh below would wait on it.
        result = rollout_out(session, rollout, registry.champion_of(session, model.id))
        session.commit()
        return result

    result = await asyncio.to_thread(write)
    # This process routes by the change now; the others within one refresh interval. Sessions keep their policy.
    await cache.refresh()
    return result


@router.put(
    "",
    response_model=RolloutOut,
    dependencies=[ApiKeyDep, Depends(require_json_content_type)],
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def put_rollout(name: ModelNameParam, body: RolloutIn, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """Start a trial of `challenger`, or retune the active one if it already tries that policy (its figures and
    session split are kept); a trial of another challenger ends, replaced. New sessions follow it at once."""
    guard = body.guard

    def start(db: Session, model: Model) -> Rollout:
        return rollouts.start_rollout(
            db,
            model,
            challenger_id=body.challenger,
            mode=body.mode,
            percent=body.percent,
            min_episodes=None if guard is None else guard.min_episodes,
            max_regression=None if guard is None else guard.max_regression,
        )

    return await _change(session, cache, name, start)


@router.get("", response_model=RolloutState, responses=error_responses(404, 422, 503))
def get_rollout(name: ModelNameParam, session: SessionDep) -> RolloutState:
    """The active rollout with its live figures (mean return and 95% interval per policy, shadow divergence and
    latency), and the recent rollouts with when and why each ended."""
    return rollout_state(session, _model(session, name))


@router.delete(
    "", response_model=RolloutOut, dependencies=[ApiKeyDep], responses=error_responses(401, 404, 409, 422, 503)
)
async def delete_rollout(name: ModelNameParam, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """End the active rollout (`ended`); the champion stays. 409 when there is none."""
    return await _change(
        session,
        cache,
        name,
        lambda db, model: rollouts.end_rollout(db, model, status="ended", reason="ended by request"),
    )


@router.post(
    "/promote", response_model=RolloutOut, dependencies=[ApiKeyDep], responses=error_responses(401, 404, 409, 422, 503)
)
async def promote_rollout(name: ModelNameParam, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """Make the challenger the champion (the rollout ends `promoted`); sessions already running keep their policy."""
    return await _change(session, cache, name, rollouts.promote_rollout)


@router.post(
    "/rollback", response_model=RolloutOut, dependencies=[ApiKeyDep], responses=error_responses(401, 404, 409, 422, 503)
)
async def rollback_rollout(name: ModelNameParam, session: SessionDep, cache: PolicyCacheDep) -> RolloutOut:
    """End the trial (`rolled_back`): new sessions get the champion only; running ones keep their policy."""
    return await _change(
        session,
        cache,
        name,
        lambda db, model: rollouts.end_rollout(db, model, status="rolled_back", reason="rolled back by request"),
    )
