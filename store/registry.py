"""The model registry: named models, their aliases, and the change counter every API process polls.

A model is bound to one environment; its policies are its versions (store.policies registers them); aliases name
some of them. `champion` is what /act serves; `challenger` is derived from the model's active rollout
(store.rollouts) and never stored as an alias row. Every function here leaves committing to the caller.

Writers serialise on the one `serving_state` row (`lock_registry`: FOR UPDATE on PostgreSQL; SQLite transactions
are serial already), so two concurrent promotions or alias moves cannot interleave their checks and writes. Every
change an API process must notice bumps that row's version (`bump_version`); a process polls it with one
primary-key read and re-reads the registry (`read_snapshot`, four small queries) only when it moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models.registry_vocabulary import (
    CHALLENGER,
    CHAMPION,
    RESERVED_MODEL_NAMES,
    check_name,
    slug_for_env,
)
from store.tables.base import utcnow
from store.tables.registry import SERVING_STATE_ID, Model, ModelAlias, Policy, Rollout, ServingState
from store.tables.work_queues import Learner


class RegistryInputError(ValueError):
    """A request the registry refuses because of one of its fields (HTTP 422 naming `field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ModelExistsError(RegistryInputError):
    """A model of that name exists already (HTTP 409)."""


# ---- the change counter -------------------------------------------------------------------------------------


def lock_registry(session: Session) -> int:
    """Hold the registry's write lock until this transaction ends; returns the current version."""
    version = session.scalar(select(ServingState.version).where(ServingState.id == SERVING_STATE_ID).with_for_update())
    if version is None:
        # The migration creates the row; this only repairs a database where someone deleted it.
        session.add(ServingState(id=SERVING_STATE_ID, version=0, updated_at=utcnow()))
        session.flush()
        return 0
    return version


def bump_version(session: Session) -> None:
    """Tell every API process that the registry changed (they re-read it within one polling interval)."""
    lock_registry(session)
    session.execute(
        update(ServingState)
        .where(ServingState.id == SERVING_STATE_ID)
        .values(version=ServingState.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def registry_version(session: Session) -> int:
    """The change counter: one primary-key read, cheap enough to poll twice a second from every process."""
    return session.scalar(select(ServingState.version).where(ServingState.id == SERVING_STATE_ID)) or 0


# ---- models -------------------------------------------------------------------------------------------------


def create_model(session: Session, *, name: str, env_id: str | None, spaces: Mapping[str, Any]) -> Model:
    """A new, empty model for the environment whose `spaces` are given (models.env_spaces.EnvSpaces.to_dict());
    env_id None: an environment that lives with the clients, known by its spaces alone."""
    try:
        check_name(name)
    except ValueError as exc:
        raise RegistryInputError("name", str(exc)) from None
    if name in RESERVED_MODEL_NAMES:
        raise RegistryInputError("name", f"{name!r} is reserved (the protocols' name for the default model)")
    bump_version(session)
    if get_model(session, name) is not None:
        raise ModelExistsError("name", f"a model named {name!r} exists already")
    model = Model(name=name, env_id=env_id, spaces=dict(spaces), created_at=utcnow())
    session.add(model)
    session.flush()
    return model


def get_model(session: Session, name: str) -> Model | None:
    return session.scalar(select(Model).where(Model.name == name))


def list_models(session: Session) -> list[Model]:
    """Every model, oldest first."""
    return list(session.scalars(select(Model).order_by(Model.id)))


def count_policies(session: Session, model_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Policy).where(Policy.model_id == model_id)) or 0


def model_for_env(session: Session, env_id: str, spaces: Mapping[str, Any], *, preferred: str) -> Model:
    """Where a policy registered without a model goes: the `preferred` model (created for this environment if it
    does not exist yet) when it is for this environment, else the oldest model for it, else a new model named after
    the environment."""
    model = get_model(session, preferred)
    if model is None:
        return create_model(session, name=preferred, env_id=env_id, spaces=spaces)
    if model.env_id == env_id:
        return model
    model = session.scalar(select(Model).where(Model.env_id == env_id).order_by(Model.id).limit(1))
    if model is not None:
        return model
    return create_model(session, name=slug_for_env(env_id), env_id=env_id, spaces=spaces)


# ---- aliases ------------------------------------------------------------------------------------------------


def get_aliases(session: Session, model_id: int) -> dict[str, int]:
    """The stored aliases of a model (champion and free ones; the challenger comes from its rollout)."""
    rows = session.execute(select(ModelAlias.alias, ModelAlias.policy_id).where(ModelAlias.model_id == model_id))
    return {alias: policy_id for alias, policy_id in rows}


def champion_of(session: Session, model_id: int) -> int | None:
    return session.scalar(
        select(ModelAlias.policy_id).where(ModelAlias.model_id == model_id, ModelAlias.alias == CHAMPION)
    )


def policy_of_model(session: Session, model: Model, policy_id: int, field: str) -> Policy:
    """The policy, which must exist and be one of the model's (RegistryInputError naming `field` otherwise)."""
    policy = session.get(Policy, policy_id)
    if policy is None:
        raise RegistryInputError(field, f"policy {policy_id} not found")
    if policy.model_id != model.id:
        owner = session.get(Model, policy.model_id) if policy.model_id is not None else None
        where = f"model {owner.name!r}" if owner is not None else "no model"
        raise RegistryInputError(field, f"policy {policy_id} belongs to {where}, not to {model.name!r}")
    return policy


def set_alias(session: Session, model: Model, alias: str, policy_id: int) -> None:
    """Point `alias` at one of the model's policies. `champion` promotes (see `set_champion`)."""
    try:
        check_name(alias, "alias")
    except ValueError as exc:
        raise RegistryInputError("alias", str(exc)) from None
    if alias == CHALLENGER:
        raise RegistryInputError("alias", "`challenger` follows the model's rollout: PUT /models/{name}/rollout")
    policy_of_model(session, model, policy_id, "policy_id")
    if alias == CHAMPION:
        set_champion(session, model.id, policy_id)
        return
    bump_version(session)
    _write_alias(session, model.id, alias, policy_id)


def delete_alias(session: Session, model: Model, alias: str) -> bool:
    """Remove a free alias; False when it did not exist. The champion and challenger cannot be removed here."""
    if alias == CHAMPION:
        raise RegistryInputError("alias", "the champion cannot be removed; promote another policy instead")
    if alias == CHALLENGER:
        raise RegistryInputError("alias", "`challenger` ends with its rollout: DELETE /models/{name}/rollout")
    bump_version(session)
    result = session.execute(
        delete(ModelAlias)
        .where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0)) > 0


def set_champion(session: Session, model_id: int, policy_id: int) -> None:
    """Make the policy its model's champion. Sessions already running keep their policy (the API pins them).

    If the policy is the challenger of the model's active rollout, that rollout ends as `promoted`.
    """
    bump_version(session)
    _write_alias(session, model_id, CHAMPION, policy_id)
    now = utcnow()
    session.execute(
        update(Rollout)
        .where(Rollout.model_id == model_id, Rollout.status == "active", Rollout.challenger_id == policy_id)
        .values(status="promoted", ended_at=now, updated_at=now, end_reason="the challenger became the champion")
        .execution_options(synchronize_session=False)
    )


def _write_alias(session: Session, model_id: int, alias: str, policy_id: int) -> None:
    row = session.get(ModelAlias, (model_id, alias), with_for_update=True, populate_existing=True)
    if row is None:
        session.add(ModelAlias(model_id=model_id, alias=alias, policy_id=policy_id, updated_at=utcnow()))
    else:
        row.policy_id = policy_id
        row.updated_at = utcnow()
    session.flush()


# ---- what an API process serves ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutView:
    """An active rollout as an API process routes it."""

    id: int
    challenger_id: int
    mode: str
    percent: float
    salt: str
    min_episodes: int | None
    max_regression: float | None


@dataclass(frozen=True, slots=True)
class ModelView:
    id: int
    name: str
    env_id: str | None
    spaces: dict[str, Any]
    aliases: dict[str, int]
    rollout: RolloutView | None
    # The recording settings (store.experience.set_settings); None: never set.
    experience: dict[str, Any] | None = None
    # An online learner (store.learners) is queued or running for it.
    learning: bool = False

    @property
    def champion_id(self) -> int | None:
        return self.aliases.get(CHAMPION)


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    version: int
    models: tuple[ModelView, ...]


def read_snapshot(session: Session) -> RegistrySnapshot:
    """Every model with its aliases and active rollout, and the version they are current for."""
    version = registry_version(session)
    aliases: dict[int, dict[str, int]] = {}
    for model_id, alias, policy_id in session.execute(
        select(ModelAlias.model_id, ModelAlias.alias, ModelAlias.policy_id)
    ):
        aliases.setdefault(model_id, {})[alias] = policy_id
    rollouts = {
        row.model_id: RolloutView(
            row.id, row.challenger_id, row.mode, row.percent, row.salt, row.min_episodes, row.max_regression
        )
        for row in session.scalars(select(Rollout).where(Rollout.status == "active"))
    }
    learning = set(session.scalars(select(Learner.model_id).where(Learner.status.in_(("queued", "running")))))
    models = tuple(
        ModelView(
            m.id,
            m.name,
            m.env_id,
            dict(m.spaces),
            aliases.get(m.id, {}),
            rollouts.get(m.id),
            None if m.experience is None else dict(m.experience),
            m.id in learning,
        )
        for m in list_models(session)
    )
    return RegistrySnapshot(version, models)
