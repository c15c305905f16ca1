"""Named models over HTTP: create and inspect them, their aliases, /act and POST /train by model, and KServe/V2 by
model name; every bad input a 4xx naming the field, with nothing changed."""

from __future__ import annotations

import numpy as np
import pytest

from models.policy import NumpyActor
from models.random_actor import random_actor_bytes
from store.policies import register_policy
from store.registry import get_model
from tests.app.conftest import Api, ApiFactory
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.conftest import sqlite_only

CAR = "MountainCarContinuous-v0"


def car_bytes(seed: int = 0, eval_mean_return: float | None = 10.0) -> bytes:
    return random_actor_bytes(
        seed, obs_dim=2, act_dim=1, action_bound=1.0, env_id=CAR, eval_mean_return=eval_mean_return
    )


def add_to_model(api: Api, model: str, weights: bytes, promote: str = "if_better") -> int:
    """Register a policy in a named model, as a worker finishing that model's job would."""
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        found = get_model(session, model)
        assert found is not None
        policy_id = register_policy(session, weights=weights, promote=promote, model_id=found.id).id
        session.commit()
    api.refresh()
    return policy_id


def field_of(response: object) -> str:
    error = assert_error_shape(response.json())  # type: ignore[attr-defined]
    return str(error["details"][0]["field"])  # type: ignore[index]


def test_the_default_model_is_listed_with_its_spaces(api: Api) -> None:
    (model,) = api.client.get("/models").json()["items"]
    assert model["name"] == "pendulum" and model["env_id"] == "Pendulum-v1" and model["is_default"]
    assert model["spaces"]["obs_dim"] == 3 and model["spaces"]["action_high"] == [2.0]
    assert model["policies"] == 0 and model["champion_id"] is None and model["aliases"] == {}
    assert model["rollout"] is None


def test_create_a_model_and_serve_it_beside_the_default(api: Api) -> None:
    pendulum = api.add_policy(make_policy_bytes(1), promote="always")
    response = api.client.post("/models", json={"name": "car", "env_id": CAR})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["spaces"] == {
        "obs_dim": 2,
        "act_dim": 1,
        "observation_low": [pytest.approx(-1.2), pytest.approx(-0.07)],
        "observation_high": [pytest.approx(0.6), pytest.approx(0.07)],
        "action_low": [-1.0],
        "action_high": [1.0],
        "reward_range": [-0.1, 100.0],  # MountainCarContinuous' rewards, known to the service (models.reward_ranges)
    }
    assert not created["is_default"]
    # A model without a champion is known (503 "no policy"), not unknown (404).
    response = api.client.post("/act", json={"observation": [0.1, 0.0], "model": "car"})
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    car_weights = car_bytes(3)
    car = add_to_model(api, "car", car_weights)
    body = api.client.post("/act", json={"observation": [-0.5, 0.01], "model": "car"}).json()
    assert body["policy_id"] == car
    np.testing.assert_allclose(
        body["action"], NumpyActor.from_bytes(car_weights).act(np.array([-0.5, 0.01])), rtol=1e-6
    )
    assert api.client.post("/act", json={"observation": [0.1, 0.2, 0.3]}).json()["policy_id"] == pendulum
    assert (
        api.client.post("/act", json={"observation": [0.1, 0.2, 0.3], "model": "pendulum"}).json()["policy_id"]
        == pendulum
    )
    got = api.client.get("/models/car").json()
    assert got["champion_id"] == car and got["aliases"] == {"champion": car} and got["policies"] == 1
    page = api.client.get("/models/car/policies").json()
    assert [p["id"] for p in page["items"]] == [car] and page["items"][0]["env_id"] == CAR
    # The observation must fit the model's policy.
    response = api.client.post("/act", json={"observation": [0.1, 0.2, 0.3], "model": "car"})
    assert response.status_code == 422 and field_of(response) == "observation"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "Car", "env_id": CAR}, 422, "name"),
        ({"name": "1car", "env_id": CAR}, 422, "name"),
        ({"name": "default", "env_id": CAR}, 422, "name"),
        ({"name": "car", "env_id": "NoSuchEnv-v9"}, 422, "env_id"),
        ({"name": "car", "env_id": "CartPole-v1"}, 422, "env_id"),  # discrete actions
        ({"name": "car", "env_id": "os:system"}, 422, "env_id"),  # never imports a module named in a body
        ({"name": "pendulum", "env_id": CAR}, 409, "name"),
        ({"name": "car"}, 422, "env_id"),
        ({"name": "car", "env_id": CAR, "extra": 1}, 422, "extra"),
    ],
)
def test_bad_models_are_refused_naming_the_field(api: Api, body: dict[str, object], status: int, field: str) -> None:
    response = api.client.post("/models", json=body)
    assert response.status_code == status, response.text
    assert field_of(response) == field
    assert [m["name"] for m in api.client.get("/models").json()["items"]] == ["pendulum"]


def test_unknown_models_are_404_naming_the_field(api: Api) -> None:
    api.add_policy(make_policy_bytes(1), promote="always")
    response = api.client.post("/act", json={"observation": [0, 0, 0], "model": "boat"})
    assert response.status_code == 404 and field_of(response) == "model"
    for method, path in [
        ("GET", "/models/boat"),
        ("GET", "/models/boat/policies"),
        ("GET", "/models/boat/rollout"),
        ("PUT", "/models/boat/aliases/stable"),
        ("DELETE", "/models/boat/aliases/stable"),
    ]:
        response = api.client.request(method, path, json={"policy_id": 1} if method == "PUT" else None)
        assert response.status_code == 404, (path, response.text)
        assert field_of(response) == "name"


# Every route with a name in its path, and a body each accepts.
NAMED_ROUTES = [
    ("GET", "/models/{name}", None),
    ("GET", "/models/{name}/policies", None),
    ("PUT", "/models/{name}/aliases/stable", {"policy_id": 1}),
    ("DELETE", "/models/{name}/aliases/stable", None),
    ("PUT", "/models/{name}/rollout", {"challenger": 1, "mode": "shadow"}),
    ("GET", "/models/{name}/rollout", None),
    ("DELETE", "/models/{name}/rollout", None),
    ("POST", "/models/{name}/rollout/promote", None),
    ("POST", "/models/{name}/rollout/rollback", None),
]


@pytest.mark.parametrize("character", ["%00", "%0A", "%1B", "%7F", "%C2%9B"])
def test_control_characters_in_a_path_name_are_a_422_naming_it(
    api: Api, character: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL cannot hold a NUL (psycopg: DataError, once a 500): refused before any query, on both databases."""
    api.add_policy(make_policy_bytes(1), promote="always")
    cases = [(method, path.format(name=f"pen{character}dulum"), body, "name") for method, path, body in NAMED_ROUTES]
    cases += [
        ("PUT", f"/models/pendulum/aliases/st{character}", {"policy_id": 1}, "alias"),
        ("DELETE", f"/models/pendulum/aliases/{character}", None, "alias"),
    ]
    for method, path, body, parameter in cases:
        response = api.client.request(method, path, json=body)
        assert response.status_code == 422, (method, path, response.text)
        assert field_of(response) == parameter, (method, path, response.text)
    assert api.client.get("/models/pendulum").status_code == 200  # nothing changed
    assert not any(ord(c) < 32 and c not in "\n\t" for c in caplog.text)


def test_a_policy_of_another_model_is_refused(api: Api) -> None:
    pendulum = api.add_policy(make_policy_bytes(1), promote="always")
    api.client.post("/models", json={"name": "car", "env_id": CAR})
    car = add_to_model(api, "car", car_bytes())
    response = api.client.post("/act", json={"observation": [0, 0], "model": "car", "policy_id": pendulum})
    assert response.status_code == 422 and field_of(response) == "policy_id"
    response = api.client.put("/models/car/aliases/stable", json={"policy_id": pendulum})
    assert response.status_code == 422 and field_of(response) == "policy_id"
    # Without `model`, a policy id alone still picks any policy (as before models).
    assert api.client.post("/act", json={"observation": [0, 0], "policy_id": car}).json()["policy_id"] == car


def test_aliases(api: Api) -> None:
    first = api.add_policy(make_policy_bytes(1), promote="always")
    second = api.add_policy(make_policy_bytes(2))
    response = api.client.put("/models/pendulum/aliases/stable", json={"policy_id": second})
    assert response.status_code == 200 and response.json()["aliases"] == {"champion": first, "stable": second}
    for alias, body, field in [
        ("challenger", {"policy_id": second}, "alias"),
        ("Bad!", {"policy_id": second}, "alias"),
        ("stable", {"policy_id": 999}, "policy_id"),
        ("stable", {"policy_id": "2"}, "policy_id"),
    ]:
        response = api.client.put(f"/models/pendulum/aliases/{alias}", json=body)
        assert response.status_code == 422 and field_of(response) == field, response.text
    response = api.client.delete("/models/pendulum/aliases/champion")
    assert response.status_code == 422 and field_of(response) == "alias"
    assert api.client.delete("/models/pendulum/aliases/stable").status_code == 204
    response = api.client.delete("/models/pendulum/aliases/stable")
    assert response.status_code == 404 and field_of(response) == "alias"
    # The champion alias is a promotion: /act answers with it at once.
    assert api.client.put("/models/pendulum/aliases/champion", json={"policy_id": second}).status_code == 200
    assert api.client.post("/act", json={"observation": [0, 0, 0]}).json()["policy_id"] == second
    assert api.client.get(f"/policies/{second}").json()["is_default"]


def test_mutations_need_the_api_key_when_set(make_api: ApiFactory) -> None:
    api = make_api(api_key="admin-key")
    for method, path, body in [
        ("POST", "/models", {"name": "car", "env_id": CAR}),
        ("PUT", "/models/pendulum/aliases/stable", {"policy_id": 1}),
        ("DELETE", "/models/pendulum/aliases/stable", None),
        ("PUT", "/models/pendulum/rollout", {"challenger": 2, "mode": "canary", "percent": 10}),
        ("DELETE", "/models/pendulum/rollout", None),
        ("POST", "/models/pendulum/rollout/promote", None),
        ("POST", "/models/pendulum/rollout/rollback", None),
    ]:
        response = api.client.request(method, path, json=body)
        assert response.status_code == 401, path
    assert api.client.get("/models").status_code == 200


def test_train_a_new_model_for_another_environment(api: Api) -> None:
    response = api.client.post("/train", json={"model": "car", "env_id": CAR, "episodes": 2})
    assert response.status_code == 202, response.text
    assert response.json()["config"] == {"preset": "default", "env_id": CAR, "episodes": 2}
    assert api.client.get("/models/car").json()["env_id"] == CAR
    # An existing model trains on its own environment, named or not.
    response = api.client.post("/train", json={"model": "car", "episodes": 2})
    assert response.status_code == 202 and response.json()["config"]["env_id"] == CAR
    response = api.client.post("/train", json={"model": "car", "env_id": "Pendulum-v1"})
    assert response.status_code == 422 and field_of(response) == "env_id"


@sqlite_only
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "boat", "env_id": "NoSuchEnv-v9"}, "env_id"),
        ({"model": "boat", "env_id": "CartPole-v1"}, "env_id"),
        ({"model": "Boat"}, "model"),
        ({"env_id": CAR}, "env_id"),  # the default model is for Pendulum-v1
        ({"env_id": ""}, "env_id"),
    ],
)
def test_train_refuses_environments_it_cannot_serve(api: Api, body: dict[str, object], field: str) -> None:
    response = api.client.post("/train", json=body)
    assert response.status_code == 422, response.text
    assert field_of(response) == field
    assert api.client.get("/jobs").json()["total"] == 0
    assert [m["name"] for m in api.client.get("/models").json()["items"]] == ["pendulum"]


def test_a_full_queue_creates_no_model(make_api: ApiFactory) -> None:
    api = make_api(max_queued_jobs=1)
    assert api.client.post("/train", json={}).status_code == 202
    response = api.client.post("/train", json={"model": "car", "env_id": CAR})
    assert response.status_code == 429
    assert api.client.get("/models/car").status_code == 404


def test_kserve_and_v2_serve_a_model_by_name(api: Api) -> None:
    pendulum = api.add_policy(make_policy_bytes(1), promote="always")
    api.client.post("/models", json={"name": "car", "env_id": CAR})
    first = add_to_model(api, "car", car_bytes(1))
    second = add_to_model(api, "car", car_bytes(2), promote="never")
    predictions = api.client.post("/v1/models/car:predict", json={"instances": [[0.0, 0.0]]}).json()["predictions"]
    np.testing.assert_allclose(predictions[0], NumpyActor.from_bytes(car_bytes(1)).act(np.zeros(2)), rtol=1e-6)
    assert api.client.get("/v1/models").json()["models"] == ["default", "car"]  # the default model as `default`
    assert api.client.get("/v2/models/car").json()["versions"] == [str(first)]
    assert api.client.get(f"/v2/models/car/versions/{second}/ready").status_code == 200
    assert api.client.get(f"/v2/models/car/versions/{pendulum}/ready").status_code == 404
    # What worked before models works the same: `default` and policy ids.
    assert api.client.get("/v2/models/default").json()["versions"] == [str(pendulum)]
    assert api.client.post(f"/v1/models/{second}:predict", json={"instances": [[0.0, 0.0]]}).status_code == 200
