"""Named models: create, list, inspect (spaces, aliases, rollout), their policies, and their aliases."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Response

from app.routes.deps import (
    JSON_WRITE,
    AliasParam,
    ApiKeyDep,
    DatabaseDep,
    ModelNameParam,
    PageDep,
    PolicyCacheDep,
    SessionDep,
    SettingsDep,
)
from app.schemas.errors import error_responses
from app.schemas.experience import ExperienceIn, ExperienceOut
from app.schemas.models import AliasIn, ModelCreate, ModelList, ModelOut
from app.schemas.policies import PolicyList
from app.schemas.registry_views import model_out, policy_page
from app.services import experience, model_registry
from store import registry

router = APIRouter(prefix="/models", tags=["models"])


@router.post(
    "",
    response_model=ModelOut,
    status_code=201,
    dependencies=JSON_WRITE,
    responses=error_responses(400, 401, 409, 413, 415, 422, 503),
)
async def create(body: ModelCreate, session: SessionDep, settings: SettingsDep, cache: PolicyCacheDep) -> ModelOut:
    """Create an empty model for a gymnasium environment with Box observations and actions (422 otherwise), or,
    without `env_id`, for an environment that lives with the clients, from its observation and action spaces."""
    return await model_registry.create_model(session, cache, settings, body)


@router.get("", response_model=ModelList, responses=error_responses(503))
def list_models(session: SessionDep, settings: SettingsDep) -> ModelList:
    """Every model with its spaces, aliases and active rollout, oldest first."""
    return ModelList(items=[model_out(session, m, settings.default_model) for m in registry.list_models(session)])


@router.get("/{name}", response_model=ModelOut, responses=error_responses(404, 422, 503))
def get_model(name: ModelNameParam, session: SessionDep, settings: SettingsDep) -> ModelOut:
    """One model: its environment's sizes and bounds, its policy count, aliases and rollout with live figures."""
    return model_out(session, model_registry.model_or_404(session, name), settings.default_model)


@router.get("/{name}/policies", response_model=PolicyList, responses=error_responses(404, 422, 503))
def model_policies(
    name: ModelNameParam,
    session: SessionDep,
    settings: SettingsDep,
    page: PageDep,
) -> PolicyList:
    """The model's policies (its versions), newest first; paginated with the total count."""
    model = model_registry.model_or_404(session, name)
    return policy_page(session, settings.default_model, limit=page.limit, offset=page.offset, model=model)


@router.put(
    "/{name}/aliases/{alias}",
    response_model=ModelOut,
    dependencies=JSON_WRITE,
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def put_alias(
    name: ModelNameParam,
    alias: AliasParam,
    body: AliasIn,
    *,
    session: SessionDep,
    settings: SettingsDep,
    cache: PolicyCacheDep,
    tasks: BackgroundTasks,
) -> ModelOut:
    """Point an alias at one of the model's policies; `champion` promotes it (new sessions get it, running ones
    keep theirs). `challenger` follows the rollout and cannot be set here."""
    return await model_registry.set_alias(
        session, cache, settings, tasks, name=name, alias=alias, policy_id=body.policy_id
    )


@router.delete(
    "/{name}/aliases/{alias}",
    status_code=204,
    response_class=Response,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 422, 503),
)
async def delete_alias(name: ModelNameParam, alias: AliasParam, session: SessionDep, cache: PolicyCacheDep) -> Response:
    """Remove a free alias (404 when the model has no such alias; the champion and challenger are not removable)."""
    await model_registry.delete_alias(session, cache, name, alias)
    return Response(status_code=204)


@router.get("/{name}/experience", response_model=ExperienceOut, responses=error_responses(404, 422, 503))
def get_experience(name: ModelNameParam, session: SessionDep) -> ExperienceOut:
    """The model's recording settings and its recorded experience: transitions, episodes, per policy, bytes, dropped,
    oldest and newest, and explore vs non-explore live returns."""
    return experience.get(session, name)


@router.put(
    "/{name}/experience",
    response_model=ExperienceOut,
    dependencies=JSON_WRITE,
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def put_experience(
    name: ModelNameParam, body: ExperienceIn, session: SessionDep, cache: PolicyCacheDep, database: DatabaseDep
) -> ExperienceOut:
    """Start or stop recording the model's session steps (every API process within one registry poll), with the
    retention limit and the exploration of a share of sessions."""
    return await experience.put(session, cache, name, body, database.chunk_storage)


@router.delete(
    "/{name}/experience",
    status_code=204,
    response_class=Response,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 422, 503),
)
def delete_experience(name: ModelNameParam, session: SessionDep, database: DatabaseDep) -> Response:
    """Delete the model's recorded experience (the recording settings stay as they are)."""
    experience.delete(session, name, database.chunk_storage)
    return Response(status_code=204)
