"""A model's online learner: start or replace it, watch it, stop it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.routes.deps import (
    JSON_WRITE,
    ActRuntimeDep,
    ApiKeyDep,
    ModelNameParam,
    PolicyCacheDep,
    SessionDep,
    SettingsDep,
)
from app.schemas.errors import error_responses
from app.schemas.learners import LearnerIn, LearnerOut
from app.services import learners

router = APIRouter(prefix="/models", tags=["learners"])


@router.put(
    "/{name}/learner",
    response_model=LearnerOut,
    status_code=202,
    dependencies=JSON_WRITE,
    responses=error_responses(400, 401, 404, 409, 413, 415, 422, 503),
)
async def put_learner(
    *,
    name: ModelNameParam,
    body: LearnerIn,
    session: SessionDep,
    settings: SettingsDep,
    cache: PolicyCacheDep,
    replace: Annotated[
        bool,
        Query(description="Replace the model's live learner (it hands over its checkpoint) instead of a 409."),
    ] = False,
) -> LearnerOut:
    """Start an online learner for the model; recording and exploration are turned on if they are off. A model has
    one live learner: a second is a 409 unless `replace=true`. A learner process claims it; until its first
    publish, a model without a champion answers session steps with uniform random actions within its bounds."""
    return await learners.put(session, cache, settings, name, body, replace=replace)


@router.get("/{name}/learner", response_model=LearnerOut, responses=error_responses(404, 422, 503))
def get_learner(name: ModelNameParam, session: SessionDep, runtime: ActRuntimeDep) -> LearnerOut:
    """The model's learner (the running one, else the last): progress, lag, update-to-data ratio, its publishes."""
    return learners.get(session, name, unflushed=runtime.routing.experience.unflushed)


@router.delete(
    "/{name}/learner",
    status_code=204,
    response_class=Response,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 422, 503),
)
async def delete_learner(name: ModelNameParam, session: SessionDep, cache: PolicyCacheDep) -> Response:
    """Stop the model's learner now (its process lets go at its next write); its policies stay."""
    await learners.delete(session, cache, name)
    return Response(status_code=204)
