"""POST /act through the whole app: actions, policy choice, every error path, limits and auth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.policy import NumpyActor
from tests.app.conftest import Api, ApiFactory
from tests.app.factories import assert_error_shape, make_policy_bytes


@pytest.fixture
def empty_database_url(tmp_path: Path) -> str:
    """SQLite only: POST /act answers from the process's policy cache, the same whichever database fills it
    (serving on PostgreSQL: tests/app/test_models_api.py, tests/app/test_rollout_api.py)."""
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def served(api: Api) -> tuple[Api, int, NumpyActor]:
    weights = make_policy_bytes(1)
    policy_id = api.add_policy(weights, promote="always")
    return api, policy_id, NumpyActor.from_bytes(weights)


def test_one_observation_gets_the_default_policys_action(served: tuple[Api, int, NumpyActor]) -> None:
    api, policy_id, actor = served
    response = api.client.post("/act", json={"observation": [0.5, -0.5, 1.0]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"action", "policy_id"} and body["policy_id"] == policy_id
    np.testing.assert_allclose(body["action"], actor.act(np.array([0.5, -0.5, 1.0], dtype=np.float32)), rtol=1e-6)


def test_a_batch_gets_one_action_per_observation_within_the_bounds(served: tuple[Api, int, NumpyActor]) -> None:
    api, policy_id, actor = served
    observations = np.random.default_rng(0).normal(scale=50, size=(64, 3)).astype(np.float32)
    response = api.client.post("/act", json={"observations": observations.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"actions", "policy_id"} and body["policy_id"] == policy_id
    actions = np.array(body["actions"])
    assert actions.shape == (64, 1)
    assert np.all(actions >= -2.0) and np.all(actions <= 2.0)
    np.testing.assert_allclose(actions, actor.act(observations), rtol=1e-6)


def test_an_explicit_policy_id_picks_that_policy(served: tuple[Api, int, NumpyActor]) -> None:
    api, default_id, _ = served
    other_weights = make_policy_bytes(2)
    other_id = api.add_policy(other_weights)
    obs = [0.1, 0.2, 0.3]
    body = api.client.post("/act", json={"observation": obs, "policy_id": other_id}).json()
    assert body["policy_id"] == other_id
    np.testing.assert_allclose(body["action"], NumpyActor.from_bytes(other_weights).act(np.array(obs)), rtol=1e-6)
    assert api.client.post("/act", json={"observation": obs}).json()["policy_id"] == default_id


def test_unknown_policy_id_is_404(served: tuple[Api, int, NumpyActor]) -> None:
    api, _, _ = served
    response = api.client.post("/act", json={"observation": [0, 0, 0], "policy_id": 12345})
    assert response.status_code == 404
    assert "12345" in str(assert_error_shape(response.json(), "not_found")["message"])


def test_no_policy_yet_is_503_with_retry_after(api: Api) -> None:
    response = api.client.post("/act", json={"observation": [0, 0, 0]})
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    assert_error_shape(response.json(), "no_policy")


def test_observation_length_is_checked_against_the_policy(served: tuple[Api, int, NumpyActor]) -> None:
    api, policy_id, _ = served
    response = api.client.post("/act", json={"observation": [0, 0]})
    assert response.status_code == 422
    error = assert_error_shape(response.json(), "validation_error")
    assert error["details"] == [
        {"field": "observation", "message": f"expected 3 numbers (obs_dim of policy {policy_id}), got 2"}
    ]
    response = api.client.post("/act", json={"observations": [[0, 0, 0, 0]]})
    assert response.status_code == 422 and "observations[0]" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"observation": [NaN, 0, 0]}',
        b'{"observation": [Infinity, 0, 0]}',
        b'{"observation": [0, "1", 0]}',
        b'{"observation": [0, {"x": [1]}, 0]}',
        b'{"observations": []}',
        b'{"observations": [[0, 0, 0], [0, 0]]}',
        b'{"observation": [0, 0, 0], "temperature": 1}',
        b"[0, 0, 0]",
        b"garbage",
        b"",
    ],
)
def test_bad_bodies_are_422_in_the_error_shape(served: tuple[Api, int, NumpyActor], content: bytes) -> None:
    api, _, _ = served
    response = api.client.post("/act", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = assert_error_shape(response.json(), "validation_error")
    assert error["details"] and "field" in error["details"][0]  # type: ignore[index]


def test_batches_over_max_batch_are_422(make_api: ApiFactory) -> None:
    api = make_api(max_batch=8)
    api.add_policy(make_policy_bytes(1), promote="always")
    assert api.client.post("/act", json={"observations": [[0, 0, 0]] * 8}).status_code == 200
    response = api.client.post("/act", json={"observations": [[0, 0, 0]] * 9})
    assert response.status_code == 422 and "at most 8" in response.json()["error"]["message"]


def test_non_json_content_type_is_415(served: tuple[Api, int, NumpyActor]) -> None:
    api, _, _ = served
    response = api.client.post("/act", content=b"0,0,0", headers={"content-type": "text/csv"})
    assert response.status_code == 415
    assert_error_shape(response.json(), "unsupported_media_type")
    response = api.client.post("/act", content=b'{"observation": [0, 0, 0]}')  # no Content-Type: read as JSON
    assert response.status_code == 200


def test_bodies_over_the_limit_are_413_declared_or_streamed(make_api: ApiFactory) -> None:
    api = make_api(max_body_bytes=2048)
    api.add_policy(make_policy_bytes(1), promote="always")
    big = b'{"observations": [' + b",".join([b"[0.0, 0.0, 0.0]"] * 200) + b"]}"
    assert len(big) > 2048
    response = api.client.post("/act", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")

    def chunks() -> object:  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    response = api.client.post("/act", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")
    small = b'{"observations": [[0.0, 0.0, 0.0]]}'
    assert (
        api.client.post("/act", content=iter([small]), headers={"content-type": "application/json"}).status_code == 200
    )


def test_act_api_key_when_configured(make_api: ApiFactory) -> None:
    api = make_api(act_api_key="act-secret", api_key="admin-secret")
    api.add_policy(make_policy_bytes(1), promote="always")
    body = {"observation": [0, 0, 0]}
    assert api.client.post("/act", json=body).status_code == 401
    wrong = api.client.post("/act", json=body, headers={"Authorization": "Bearer admin-secret"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert_error_shape(wrong.json(), "unauthorized")
    assert "act-secret" not in wrong.text
    assert api.client.post("/act", json=body, headers={"Authorization": "Bearer act-secret"}).status_code == 200


def test_act_is_open_when_only_api_key_is_set(make_api: ApiFactory) -> None:
    api = make_api(api_key="admin-secret")
    api.add_policy(make_policy_bytes(1), promote="always")
    assert api.client.post("/act", json={"observation": [0, 0, 0]}).status_code == 200


def test_promotion_swaps_the_served_policy_and_responses_name_it(served: tuple[Api, int, NumpyActor]) -> None:
    api, first_id, _ = served
    second_id = api.add_policy(make_policy_bytes(2), promote="always")
    assert api.client.post("/act", json={"observation": [0, 0, 0]}).json()["policy_id"] == second_id != first_id


def test_bench_noop_exists_only_in_bench_mode(make_api: ApiFactory) -> None:
    plain = make_api()
    assert plain.client.post("/bench/noop", json={"observation": [0, 0, 0]}).status_code == 404
    bench = make_api(bench_endpoints=True)
    response = bench.client.post("/bench/noop", json={"observation": [0, 0, 0]})
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert bench.client.post("/bench/noop", json={"observation": ["x"]}).status_code == 422
