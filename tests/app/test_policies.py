"""/policies: list, inspect, download weights, promote (with auth), and POLICY_FILE at start-up."""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.weights import decode_actor
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
