"""Named models: create, list, inspect (spaces, aliases, rollout), their policies, and their aliases."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from app.infra.errors import ApiError, field_error
from app.routes.deps import ApiKeyDep, PolicyCacheDep, SessionDep, SettingsDep, require_json_content_type
from app.schemas.errors import error_responses
from app.schemas.models import AliasIn, ModelCreate, ModelList, ModelOut
from app.schemas.policies import DEFAULT_POLICY_ID, PolicyList, PolicyOut
from app.serving.model_views import model_out
from models.env_spaces import EnvironmentUnsupportedError, describe_env
from models.registry_vocabulary import NAME_MAX_LENGTH
from store import policies, registry
from store.tables import Model

router = APIRouter(prefix="/models", tags=["models"])

ModelNameParam = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LENGTH, description="The model's name.")]
AliasParam = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LENGTH, description="The alias.")]


def model_or_404(session: Session, name: str) -> Model:
    model = registry.get_model(session, name)
    if model is None:
        message = f"no model named {name!r}"
        raise ApiError(404, "not_found", f"name: {message}", details=[{"field": "name", "message": message}])
    return model


def registry_error(exc: registry.RegistryInputError) -> ApiError:
    status = 409 if isinstance(exc, registry.ModelExistsError) else 422
    error = field_error(exc.field, exc.message, status_code=status)
    if status == 409:
        error.code = "conflict"
    return error


@router.post(
    "",
    response_model=ModelOut,
    status_code=201,
    dependencies=[ApiKeyDep, Depends(require_json_content_type)],
    responses=error_responses(400, 401, 409, 413, 415, 422, 503),
)
async def create(body: ModelCreate, session: SessionDep, settings: SettingsDep, cache: PolicyCacheDep) -> ModelOut:
    """Create an empty model for a gymnasium environment with Box observations and actions (422 otherwise)."""

    def create_and_commit() -> ModelOut:
        try:
            spaces = describe_env(body.env_id)
        except EnvironmentUnsupportedError as exc:
            raise field_error("env_id", str(exc)) from None
        try:
            model = registry.create_model(session, name=body.name, env_id=body.env_id, spaces=spaces.to_dict())
        except registry.RegistryInputError as exc:
            session.rollback()
            raise registry_error(exc) from None
        # Read before the commit: on SQLite a read after it would begin a transaction holding the write lock until
        # the request ends, and the cache refresh below would wait on it.
        result = model_out(session, model, settings.default_model)
        session.commit()
        return result

    result = await asyncio.to_thread(create_and_commit)
    await cache.refresh()  # this process knows the model at once; the others within one refresh interval
    return result


@router.get("", response_model=ModelList, responses=error_responses(503))
def list_models(session: SessionDep, settings: SettingsDep) -> ModelList:
    """Every model with its spaces, aliases and active rollout, oldest first."""
    return ModelList(items=[model_out(session, m, settings.default_model) for m in registry.list_models(session)])


@router.get("/{name}", response_model=ModelOut, responses=error_responses(404, 422, 503))
def get_model(name: ModelNameParam, session: SessionDep, settings: SettingsDep) -> ModelOut:
    """One model: its environment's sizes and bounds, its policy count, aliases and rollout with live figures."""
    return model_out(session, model_or_404(session, name), settings.default_model)


@router.get("/{name}/policies", response_model=PolicyList, responses=error_responses(404, 422, 503))
def model_policies(
    name: ModelNameParam,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> PolicyList:
    """The model's policies (its versions), newest first; paginated with the total count."""
    model = model_or_404(session, name)
    page, total = policies.list_policies(session, limit=limit, offset=offset, model_id=model.id)
    context = {DEFAULT_POLICY_ID: policies.get_serving_state(session, settings.default_model)[0]}
    items = [PolicyOut.model_validate(row, context=context) for row in page]
    return PolicyList(items=items, total=total, limit=limit, offset=offset)


@router.put(
    "/{name}/aliases/{alias}",
    response_model=ModelOut,
    dependencies=[ApiKeyDep, Depends(require_json_content_type)],
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
) -> ModelOut:
    """Point an alias at one of the model's policies; `champion` promotes it (new sessions get it, running ones
    keep theirs). `challenger` follows the rollout and cannot be set here."""

    def write() -> ModelOut:
        model = model_or_404(session, name)
        try:
            registry.set_alias(session, model, alias, body.policy_id)
        except registry.RegistryInputError as exc:
            session.rollback()
            raise registry_error(exc) from None
        result = model_out(session, model, settings.default_model)  # before the commit, as in `create`
        session.commit()
        return result

    result = await asyncio.to_thread(write)
    await cache.refresh()
    return result


@router.delete(
    "/{name}/aliases/{alias}",
    status_code=204,
    response_class=Response,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 422, 503),
)
async def delete_alias(name: ModelNameParam, alias: AliasParam, session: SessionDep, cache: PolicyCacheDep) -> Response:
    """Remove a free alias (404 when the model has no such alias; the champion and challenger are not removable)."""

    def write() -> None:
        model = model_or_404(session, name)
        try:
            removed = registry.delete_alias(session, model, alias)
        except registry.RegistryInputError as exc:
            session.rollback()
            raise registry_error(exc) from None
        if not removed:
            session.rollback()
            message = f"model {name!r} has no alias {alias!r}"
            raise ApiError(404, "not_found", f"alias: {message}", details=[{"field": "alias", "message": message}])
        session.commit()

    await asyncio.to_thread(write)
    await cache.refresh()
    return Response(status_code=204)
