"""Named models: found or 404, created (for POST /models, and on first use by POST /train), and their aliases.

A model is created for a gymnasium environment with Box observations and actions; anything else is a 422 naming
`env_id` before anything is stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.background import BackgroundTasks

from app.infra.errors import ApiError, field_error
from app.infra.mlflow_alias import ChampionRun, champion_run
from app.schemas.models import ModelCreate, ModelOut
from app.schemas.registry_views import model_out
from app.services.promotion import committed_then_refreshed, follow_champion
from app.serving.policy_cache import PolicyCache
from app.settings import Settings
from models.env_spaces import EnvironmentUnsupportedError, describe_env
from models.registry_vocabulary import CHAMPION
from store import registry
from store.tables.registry import Model, Policy


def model_or_404(session: Session, name: str) -> Model:
    """The model named `name`; 404 naming the field `name` when there is none."""
    model = registry.get_model(session, name)
    if model is None:
        message = f"no model named {name!r}"
        raise ApiError(404, "not_found", f"name: {message}", details=[{"field": "name", "message": message}])
    return model


def registry_error(exc: registry.RegistryInputError) -> ApiError:
    """409 for a name in use, else 422, naming the field."""
    status = 409 if isinstance(exc, registry.ModelExistsError) else 422
    error = field_error(exc.field, exc.message, status_code=status)
    if status == 409:
        error.code = "conflict"
    return error


def env_spaces(env_id: str) -> dict[str, Any]:
    """The environment's observation and action spaces as stored with a model (422 naming `env_id` otherwise)."""
    try:
        return describe_env(env_id).to_dict()
    except EnvironmentUnsupportedError as exc:
        raise field_error("env_id", str(exc)) from None


def find_or_create_model(session: Session, name: str, requested_env: str | None, env_id: str) -> Model:
    """A job's model: the existing one (whose environment must be the requested one, if any), or a new one for
    `env_id`, added to the session uncommitted (committed with the job, or rolled back with it)."""
    model = registry.get_model(session, name)
    if model is not None:
        if model.env_id is None:
            raise field_error(
                "model",
                f"model {name!r} has no environment installed here (it was created from its spaces: its environment "
                "lives with its clients), so it cannot be trained here; register policies trained elsewhere "
                "into it, or record its sessions (PUT /models/{name}/experience) to train on elsewhere",
            )
        if requested_env is not None and requested_env != model.env_id:
            message = f"model {name!r} is for {model.env_id}, not {requested_env}; name another model"
            raise field_error("env_id", message)
        return model
    spaces = env_spaces(env_id)
    try:
        return registry.create_model(session, name=name, env_id=env_id, spaces=spaces)
    except registry.ModelExistsError:  # created by a concurrent request since we looked: train that one
        return find_or_create_model(session, name, requested_env, env_id)
    except registry.RegistryInputError as exc:
        raise field_error("model" if exc.field == "name" else exc.field, exc.message) from None


def check_spaces_given(body: ModelCreate) -> None:
    """422 naming the field unless the body gives an env_id or both spaces, and not both ways."""
    spaces = {"observation_space": body.observation_space, "action_space": body.action_space}
    given = [name for name, value in spaces.items() if value is not None]
    if body.env_id is not None and given:
        raise field_error(given[0], "give `env_id` or the spaces (`observation_space`, `action_space`), not both")
    if body.env_id is None and not given:
        raise field_error("env_id", "required, unless `observation_space` and `action_space` are given")
    if body.env_id is None and len(given) == 1:
        missing = "action_space" if given[0] == "observation_space" else "observation_space"
        raise field_error(missing, f"required with `{given[0]}`: a model without `env_id` needs both spaces")


def client_spaces(body: ModelCreate) -> dict[str, Any]:
    """The spaces of a model whose environment lives with its clients, from the body's Box bounds."""
    observation, action = body.observation_space, body.action_space
    assert observation is not None and action is not None  # ModelCreate checks that both come together
    return {
        "obs_dim": len(observation.low),
        "act_dim": len(action.low),
        "observation_low": list(observation.low),
        "observation_high": list(observation.high),
        "action_low": list(action.low),
        "action_high": list(action.high),
        "reward_range": None,
    }


async def create_model(session: Session, cache: PolicyCache, settings: Settings, body: ModelCreate) -> ModelOut:
    """An empty model for the body's environment (409 for a name in use); this process knows it at once."""

    check_spaces_given(body)

    def create_and_commit() -> ModelOut:
        spaces = env_spaces(body.env_id) if body.env_id is not None else client_spaces(body)
        if "reward_range" in body.model_fields_set:  # given (null: none declared), else the environment's default
            spaces["reward_range"] = body.reward_range
        try:
            model = registry.create_model(session, name=body.name, env_id=body.env_id, spaces=spaces)
        except registry.RegistryInputError as exc:
            session.rollback()
            raise registry_error(exc) from None
        # Read before the commit: on SQLite a read after it would begin a transaction holding the write lock until
        # the request ends, and the cache refresh after it would wait on it.
        result = model_out(session, model, settings.default_model)
        session.commit()
        return result

    return await committed_then_refreshed(cache, create_and_commit)


async def set_alias(
    session: Session,
    cache: PolicyCache,
    settings: Settings,
    tasks: BackgroundTasks,
    *,
    name: str,
    alias: str,
    policy_id: int,
) -> ModelOut:
    """Point an alias at one of the model's policies; `champion` promotes it, and MLflow's alias follows."""

    def write() -> tuple[ModelOut, ChampionRun | None]:
        model = model_or_404(session, name)
        try:
            registry.set_alias(session, model, alias, policy_id)
        except registry.RegistryInputError as exc:
            session.rollback()
            raise registry_error(exc) from None
        result = model_out(session, model, settings.default_model)  # before the commit, as in `create_model`
        promoted = session.get(Policy, policy_id) if alias == CHAMPION else None
        champion = None if promoted is None else champion_run(session, settings, promoted)
        session.commit()
        return result, champion

    result, champion = await committed_then_refreshed(cache, write)
    if champion is not None:
        follow_champion(tasks, settings, champion)
    return result


async def delete_alias(session: Session, cache: PolicyCache, name: str, alias: str) -> None:
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

    await committed_then_refreshed(cache, write)
