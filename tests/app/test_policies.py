"""/policies: list, inspect, download weights, promote (with auth), and POLICY_FILE at start-up."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from models.policy import NumpyActor
from models.random_actor import random_policy_weights
from models.weights import decode_actor, encode_policy
from tests.app.conftest import Api, ApiFactory
from tests.app.factories import assert_error_shape, make_policy_bytes

AUTH = {"Authorization": "Bearer admin-key"}


def test_list_and_get_policies(api: Api) -> None:
    first_weights = make_policy_bytes(1, eval_mean_return=-300.0)
    first = api.add_policy(first_weights, promote="always")
    second = api.add_policy(make_policy_bytes(2, eval_mean_return=None))
    page = api.client.get("/policies").json()
    assert [p["id"] for p in page["items"]] == [second, first] and page["total"] == 2
    assert [p["is_default"] for p in page["items"]] == [False, True]
    assert [p["id"] for p in api.client.get("/policies", params={"limit": 1, "offset": 1}).json()["items"]] == [first]
    policy = api.client.get(f"/policies/{first}").json()
    assert policy["eval_mean_return"] == -300.0 and policy["obs_dim"] == 3 and policy["act_dim"] == 1
    assert policy["env_id"] == "Pendulum-v1" and policy["source_job_id"] is None and policy["is_default"]
    assert policy["meta"]["hidden_size"] == 8 and policy["meta"]["action_high"] == [2.0]
    assert policy["sha256"] == hashlib.sha256(first_weights).hexdigest()


def test_weights_download_is_the_stored_file(api: Api) -> None:
    weights = make_policy_bytes(4)
    policy_id = api.add_policy(weights)
    response = api.client.get(f"/policies/{policy_id}/weights")
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert response.content == weights
    assert f"policy-{policy_id}.safetensors" in response.headers["content-disposition"]
    decode_actor(response.content)


def test_unknown_policies_are_404(api: Api) -> None:
    for method, path in [("GET", "/policies/77"), ("GET", "/policies/77/weights"), ("POST", "/policies/77/promote")]:
        response = api.client.request(method, path)
        assert response.status_code == 404, path
        assert_error_shape(response.json(), "not_found")
    assert api.client.get("/policies/-1").status_code == 422


def test_promote_makes_act_serve_it_at_once(api: Api) -> None:
    first = api.add_policy(make_policy_bytes(1), promote="always")
    second = api.add_policy(make_policy_bytes(2))
    assert api.client.post("/act", json={"observation": [0, 0, 0]}).json()["policy_id"] == first
    response = api.client.post(f"/policies/{second}/promote")
    assert response.status_code == 200 and response.json()["id"] == second and response.json()["is_default"]
    assert api.client.post("/act", json={"observation": [0, 0, 0]}).json()["policy_id"] == second
    assert api.client.get("/readyz").json()["policy_id"] == second
    assert api.client.get(f"/policies/{first}").json()["is_default"] is False


def test_promote_needs_the_api_key_when_set(make_api: ApiFactory) -> None:
    api = make_api(api_key="admin-key")
    policy_id = api.add_policy(make_policy_bytes(1))
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = api.client.post(f"/policies/{policy_id}/promote", headers=headers)
        assert response.status_code == 401
        assert_error_shape(response.json(), "unauthorized")
    assert api.client.post("/policies/999/promote").status_code == 401  # auth before existence
    assert api.client.post(f"/policies/{policy_id}/promote", headers=AUTH).status_code == 200
    assert api.client.get("/policies").status_code == 200


def test_policy_file_is_registered_and_served_once(make_api: ApiFactory, tmp_path: Path) -> None:
    path = tmp_path / "actor.safetensors"
    path.write_bytes(make_policy_bytes(9))
    api = make_api(policy_file=path)
    body = api.client.post("/act", json={"observation": [0, 0, 0]}).json()
    policy_id = body["policy_id"]
    # A restart with the same file does not register a duplicate, nor undo a later promotion.
    other = api.add_policy(make_policy_bytes(10), promote="always")
    again = make_api(policy_file=path)
    assert again.client.get("/policies").json()["total"] == 2
    assert again.client.post("/act", json={"observation": [0, 0, 0]}).json()["policy_id"] == other != policy_id


def test_a_general_policy_is_served_and_shows_its_origin(api: Api) -> None:
    # A PPO-like policy (tanh, clip) with observation normalization, as an importer would register it.
    general = random_policy_weights(
        3, sizes=(3, 64, 64, 1), activations=["tanh", "tanh"], output="clip", normalized=True, origin="sb3:PPO 2.x"
    )
    data = encode_policy(general)
    policy_id = api.add_policy(data, promote="always")
    old_id = api.add_policy(make_policy_bytes(1))
    policy = api.client.get(f"/policies/{policy_id}").json()
    assert policy["origin"] == "sb3:PPO 2.x" and policy["meta"]["format"] == "policy-mlp/1"
    assert policy["meta"]["hidden_sizes"] == [64, 64] and policy["meta"]["output"] == "clip"
    assert policy["meta"]["obs_normalization"] == {"clip": 10.0, "epsilon": 1e-8}
    assert api.client.get(f"/policies/{old_id}").json()["origin"] == "trained"  # ddpg-actor/1: no origin stored
    assert [p["origin"] for p in api.client.get("/policies").json()["items"]] == ["trained", "sb3:PPO 2.x"]
    # /act answers with the policy's own forward pass, one observation (the compiled kernel) and a batch (numpy).
    actor = NumpyActor(decode_actor(data))
    observations = np.random.default_rng(3).normal(scale=40.0, size=(20, 3)).astype(np.float32)
    one = api.client.post("/act", json={"observation": observations[0].tolist()}).json()
    assert one["policy_id"] == policy_id
    np.testing.assert_allclose(one["action"], actor.act(observations[0]), atol=1e-5)
    batch = api.client.post("/act", json={"observations": observations.tolist()}).json()
    np.testing.assert_allclose(batch["actions"], actor.act(observations), atol=1e-5)
    assert api.client.get(f"/policies/{policy_id}/weights").content == data
