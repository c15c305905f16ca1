"""The model registry: models, their policies and aliases, the change counter and what an API process reads."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models.random_actor import random_actor_bytes
from store import policies, registry
from tests.conftest import make_actor_bytes, model_named

MOUNTAIN_CAR = {
    "obs_dim": 2,
    "act_dim": 1,
    "observation_low": [-1.2, -0.07],
    "observation_high": [0.6, 0.07],
    "action_low": [-1.0],
    "action_high": [1.0],
}


def _car_actor(seed: int = 0, eval_mean_return: float | None = 50.0) -> bytes:
    return random_actor_bytes(
        seed,
        obs_dim=2,
        act_dim=1,
        action_bound=1.0,
        env_id="MountainCarContinuous-v0",
        eval_mean_return=eval_mean_return,
    )


def test_the_default_model_exists_after_migration(session: Session) -> None:
    (model,) = registry.list_models(session)
    assert (model.name, model.env_id, model.spaces["obs_dim"], model.spaces["act_dim"]) == (
        "pendulum",
        "Pendulum-v1",
        3,
        1,
    )
    assert registry.get_aliases(session, model.id) == {}


def test_create_model_checks_the_name_and_bumps_the_version(session: Session) -> None:
    before = registry.registry_version(session)
    car = registry.create_model(session, name="car", env_id="MountainCarContinuous-v0", spaces=MOUNTAIN_CAR)
    session.commit()
    assert registry.registry_version(session) == before + 1
    assert model_named(session, "car").id == car.id
    for bad in ("", "Car", "1car", "car!", "x" * 65):
        with pytest.raises(registry.RegistryInputError) as caught:
            registry.create_model(session, name=bad, env_id="Pendulum-v1", spaces={})
        assert caught.value.field == "name"
        session.rollback()
    with pytest.raises(registry.RegistryInputError, match="reserved"):
        registry.create_model(session, name="default", env_id="Pendulum-v1", spaces={})
    session.rollback()
    with pytest.raises(registry.ModelExistsError):
        registry.create_model(session, name="car", env_id="Pendulum-v1", spaces={})
    session.rollback()
    assert [m.name for m in registry.list_models(session)] == ["pendulum", "car"]
    assert registry.get_model(session, "boat") is None


def test_policies_join_their_model_and_champions_are_per_model(session: Session) -> None:
    car = registry.create_model(session, name="car", env_id="MountainCarContinuous-v0", spaces=MOUNTAIN_CAR)
    pendulum_policy = policies.register_policy(session, weights=make_actor_bytes(-300.0))
    car_policy = policies.register_policy(session, weights=_car_actor(), model_id=car.id)
    session.commit()
    pendulum = model_named(session, "pendulum")
    assert (pendulum_policy.model_id, car_policy.model_id) == (pendulum.id, car.id)
    assert policies.get_serving_state(session)[0] == pendulum_policy.id
    assert policies.get_serving_state(session, "car")[0] == car_policy.id
    assert policies.list_policies(session, model_id=car.id) == ([car_policy], 1)
    # A policy of another environment never joins a model by mistake.
    with pytest.raises(policies.PolicyModelMismatchError, match="MountainCarContinuous-v0"):
        policies.register_policy(session, weights=make_actor_bytes(), model_id=car.id)
    session.rollback()


def test_a_policy_without_a_model_joins_the_model_of_its_environment(session: Session) -> None:
    first = policies.register_policy(session, weights=_car_actor(1))
    second = policies.register_policy(session, weights=_car_actor(2))
    session.commit()
    model = model_named(session, "mountaincarcontinuous-v0")
    assert first.model_id == second.model_id == model.id and model.env_id == "MountainCarContinuous-v0"
    assert model.spaces["action_high"] == [1.0]


def test_aliases_point_at_the_models_own_policies(session: Session) -> None:
    car = registry.create_model(session, name="car", env_id="MountainCarContinuous-v0", spaces=MOUNTAIN_CAR)
    pendulum = model_named(session, "pendulum")
    mine = policies.register_policy(session, weights=make_actor_bytes(seed=1), promote="never").id
    theirs = policies.register_policy(session, weights=_car_actor(), model_id=car.id).id
    session.commit()
    registry.set_alias(session, pendulum, "stable", mine)
    session.commit()
    assert registry.get_aliases(session, pendulum.id) == {"stable": mine}
    cases = [
        ("stable", theirs, "policy_id", "belongs to model 'car'"),
        ("stable", 4242, "policy_id", "not found"),
        ("challenger", mine, "alias", "rollout"),
        ("Bad Alias", mine, "alias", "a-z"),
    ]
    for alias, policy_id, field, message in cases:
        with pytest.raises(registry.RegistryInputError, match=message) as caught:
            registry.set_alias(session, pendulum, alias, policy_id)
        assert caught.value.field == field
        session.rollback()
    registry.set_alias(session, pendulum, "champion", mine)  # the champion alias is a promotion
    session.commit()
    assert policies.get_serving_state(session)[0] == mine
    with pytest.raises(registry.RegistryInputError, match="champion cannot be removed"):
        registry.delete_alias(session, pendulum, "champion")
    session.rollback()
    assert registry.delete_alias(session, pendulum, "stable") is True
    assert registry.delete_alias(session, pendulum, "stable") is False
    session.commit()
    assert registry.get_aliases(session, pendulum.id) == {"champion": mine}


def test_the_snapshot_is_what_a_process_serves(session: Session) -> None:
    champion = policies.register_policy(session, weights=make_actor_bytes(-200.0)).id
    session.commit()
    snapshot = registry.read_snapshot(session)
    assert snapshot.version == registry.registry_version(session)
    (model,) = snapshot.models
    assert (model.name, model.champion_id, model.rollout) == ("pendulum", champion, None)
    # A registration that changes nothing served leaves the version alone: processes have nothing to re-read.
    policies.register_policy(session, weights=make_actor_bytes(-900.0, seed=3))
    session.commit()
    assert registry.registry_version(session) == snapshot.version
