"""Models whose environment lives with the client, episodes ended by `done` or `truncated`, and recording with
exploration, through the app (its lifespan, the real store): every served session step recorded once, exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from models.experience_chunks import ExperienceColumns, decode_chunk
from models.policy import NumpyActor
from store.policies import register_policy
from store.registry import get_model, set_champion
from store.tables.serving_records import ExperienceChunk
from tests.app.conftest import Api
from tests.app.factories import assert_error_shape, make_policy_bytes

ARM = {
    "name": "arm",
    "observation_space": {"low": [-1.0, -1.0, None, None], "high": [1.0, 1.0, None, None]},
    "action_space": {"low": [-2.0, -0.5], "high": [2.0, 0.5]},
}


def _field(response: Any) -> str:
    assert response.status_code == 422, response.text
    error = assert_error_shape(response.json(), "validation_error")
    details = error["details"]
    assert isinstance(details, list)
    return str(details[0]["field"])


def _arm_with_champion(api: Api) -> tuple[int, bytes]:
    created = api.client.post("/models", json=ARM)
    assert created.status_code == 201, created.text
    weights = make_policy_bytes(3, obs_dim=4, act_dim=2, action_bound=2.0)
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model = get_model(session, "arm")
        assert model is not None
        policy = register_policy(session, weights=weights, promote="never", model_id=model.id)
        set_champion(session, model.id, policy.id)
        session.commit()
        policy_id = policy.id
    api.refresh()
    return policy_id, weights


def _flush(api: Api) -> None:
    recorder = api.client.app.state.act_runtime.routing.experience  # type: ignore[attr-defined]
    api.client.portal.call(recorder.flush)  # type: ignore[union-attr]


def _recorded(api: Api) -> ExperienceColumns:
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(ExperienceChunk.data).order_by(ExperienceChunk.id)).all()
    return ExperienceColumns.concat([decode_chunk(data) for data in rows if data is not None])


def test_a_model_from_its_spaces_serves_without_an_environment(api: Api) -> None:
    policy_id, _ = _arm_with_champion(api)
    model = api.client.get("/models/arm").json()
    assert model["env_id"] is None
    assert model["spaces"]["observation_high"] == [1.0, 1.0, None, None]
    assert model["spaces"]["action_low"] == [-2.0, -0.5]
    one = api.client.post("/act", json={"model": "arm", "observation": [0.1, 0.2, 3.0, -4.0]})
    assert one.status_code == 200 and one.json()["policy_id"] == policy_id
    batch = api.client.post("/act", json={"model": "arm", "observations": [[0, 0, 0, 0], [1, 1, 1, 1]]})
    assert batch.status_code == 200 and len(batch.json()["actions"]) == 2
    train = api.client.post("/train", json={"model": "arm", "episodes": 1})
    assert _field(train) == "model"
    assert "no environment installed here" in train.json()["error"]["message"]
    # The inference protocols, by model name.
    v1 = api.client.post("/v1/models/arm:predict", json={"instances": [[0, 0, 0, 0]]})
    assert v1.status_code == 200, v1.text
    v2_body = {"inputs": [{"name": "observation", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}
    v2 = api.client.post("/v2/models/arm/infer", json=v2_body)
    assert v2.status_code == 200, v2.text
    onnx = api.client.get(f"/policies/{policy_id}/actor.onnx")
    assert onnx.status_code == 200 and onnx.content


def test_aliases_and_a_canary_for_a_model_without_environment(api: Api) -> None:
    champion, _ = _arm_with_champion(api)
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model = get_model(session, "arm")
        assert model is not None
        weights = make_policy_bytes(8, obs_dim=4, act_dim=2)
        challenger = register_policy(session, weights=weights, promote="never", model_id=model.id).id
        session.commit()
    assert api.client.put("/models/arm/aliases/stable", json={"policy_id": champion}).status_code == 200
    rollout = api.client.put("/models/arm/rollout", json={"challenger": challenger, "mode": "canary", "percent": 100})
    assert rollout.status_code == 200, rollout.text
    api.refresh()
    answer = api.client.post("/act", json={"model": "arm", "session": "c", "observation": [0, 0, 0, 0]})
    assert answer.json()["policy_id"] == challenger


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "name": "a",
                "observation_space": {"low": [0.0, 2.0], "high": [1.0, 1.0]},
                "action_space": ARM["action_space"],
            },
            "observation_space.high",
        ),
        (
            {"name": "a", "observation_space": {"low": [0.0], "high": [1.0, 1.0]}, "action_space": ARM["action_space"]},
            "observation_space.high",
        ),
        (
            {
                "name": "a",
                "observation_space": ARM["observation_space"],
                "action_space": {"low": [None], "high": [1.0]},
            },
            "action_space",
        ),
        (
            {
                "name": "a",
                "observation_space": ARM["observation_space"],
                "action_space": {"low": [-1e39], "high": [1.0]},
            },
            "action_space.low",
        ),
        (
            {"name": "a", "observation_space": {"low": [], "high": []}, "action_space": ARM["action_space"]},
            "observation_space.low",
        ),
        ({"name": "a", "observation_space": ARM["observation_space"]}, "action_space"),
        ({"name": "a", "action_space": ARM["action_space"]}, "observation_space"),
        ({"name": "a"}, "env_id"),
        (
            {"name": "a", "env_id": "Pendulum-v1", **{k: ARM[k] for k in ("observation_space", "action_space")}},
            "observation_space",
        ),
    ],
)
def test_bad_spaces_are_a_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    assert _field(api.client.post("/models", json=body)) == field


def test_bad_session_fields_are_named(api: Api) -> None:
    _arm_with_champion(api)
    base = {"model": "arm", "observation": [0, 0, 0, 0]}
    both = api.client.post("/act", json={**base, "session": "s", "done": True, "truncated": True})
    assert _field(both) == "truncated"
    assert _field(api.client.post("/act", json={**base, "truncated": True})) == "truncated"
    assert _field(api.client.post("/act", json={**base, "reward": 1.0})) == "reward"
    assert _field(api.client.post("/act", json={**base, "session": "s", "truncated": 1})) == "truncated"
    for explore in ({"sigma": 0, "percent": 50}, {"sigma": 1.5, "percent": 50}, {"sigma": 0.1, "percent": 101}):
        put = api.client.put("/models/arm/experience", json={"record": True, "explore": explore})
        field = "explore.sigma" if "sigma" in str(put.json()) and explore["percent"] == 50 else "explore.percent"
        assert _field(put) == field
    assert _field(api.client.put("/models/arm/experience", json={"record": True, "max_transitions": 0})) == (
        "max_transitions"
    )


def test_every_session_step_is_recorded_once_with_its_exact_values(api: Api) -> None:
    policy_id, weights = _arm_with_champion(api)
    actor = NumpyActor.from_bytes(weights)
    put = api.client.put("/models/arm/experience", json={"record": True, "max_transitions": 1000})
    assert put.status_code == 200 and put.json()["record"] is True
    rng = np.random.default_rng(1)
    sent: list[tuple[str, int, list[float], list[float]]] = []
    for session, ending in (("s-term", "done"), ("s-trunc", "truncated")):
        observation = rng.normal(size=4).astype(np.float32).tolist()
        reward: float | None = None
        for step in range(5):
            body: dict[str, Any] = {"model": "arm", "session": session, "observation": observation}
            if reward is not None:
                body["reward"] = reward
            last = step == 4
            if last:
                body[ending] = True
            answer = api.client.post("/act", json=body)
            assert answer.status_code == 200, answer.text
            action = answer.json()["action"]
            assert np.allclose(action, actor.act(np.asarray([observation], np.float32))[0], atol=1e-5)
            if not last:  # the last request carries the final observation: its action is no transition's
                sent.append((session, step, observation, action))
            reward = float(rng.normal())
            observation = rng.normal(size=4).astype(np.float32).tolist()
    # Without a session: answered, never recorded.
    assert api.client.post("/act", json={"model": "arm", "observation": [0, 0, 0, 0]}).status_code == 200
    _flush(api)
    recorded = _recorded(api)
    assert len(recorded) == 8  # 4 transitions per 5-request episode: the last request carries the final observation
    for session, ending in (("s-term", "terminated"), ("s-trunc", "truncated")):
        rows = np.flatnonzero(recorded.session == session)
        ordered = rows[np.argsort(recorded.step[rows])]
        assert recorded.step[ordered].tolist() == [0, 1, 2, 3]
        assert len(set(recorded.episode[ordered].tolist())) == 1
        ends = getattr(recorded, ending)[ordered].tolist()
        assert ends == [False, False, False, True]
        other = "truncated" if ending == "terminated" else "terminated"
        assert not getattr(recorded, other)[ordered].any()
        expected = [s for s in sent if s[0] == session]
        for row, (_, step, observation, action) in zip(ordered, expected, strict=True):
            assert recorded.step[row] == step
            assert recorded.observation[row].tolist() == np.asarray(observation, np.float32).tolist()
            assert recorded.action[row].tolist() == np.asarray(action, np.float32).tolist()
        # Each transition's next observation is the observation of the following step.
        assert np.array_equal(recorded.next_observation[ordered[:-1]], recorded.observation[ordered[1:]])
    assert (recorded.policy_id == policy_id).all()
    assert not recorded.noise.any() and not recorded.noise_scale.any()
    stats = api.client.get("/models/arm/experience").json()
    assert stats["transitions"] == 8 and stats["episodes"] == 2 and stats["dropped"] == 0
    assert stats["per_policy"] == [{"policy_id": policy_id, "transitions": 8}]
    assert stats["returns"][0]["arm"] == "policy" and stats["returns"][0]["episodes"] == 2
    assert api.client.delete("/models/arm/experience").status_code == 204
    assert api.client.get("/models/arm/experience").json()["transitions"] == 0


def test_rewards_are_the_next_requests_rewards(api: Api) -> None:
    _arm_with_champion(api)
    api.client.put("/models/arm/experience", json={"record": True})
    rewards = [0.5, -1.25, 3.0]
    api.client.post("/act", json={"model": "arm", "session": "r", "observation": [0, 0, 0, 0]})
    for index, reward in enumerate(rewards):
        body: dict[str, Any] = {"model": "arm", "session": "r", "observation": [index, 0, 0, 0], "reward": reward}
        if index == len(rewards) - 1:
            body["done"] = True
        assert api.client.post("/act", json=body).status_code == 200
    _flush(api)
    recorded = _recorded(api)
    order = np.argsort(recorded.step)
    assert recorded.reward[order].tolist() == rewards
    assert recorded.terminated[order].tolist() == [False, False, True]
    returns = api.client.get("/models/arm/experience").json()["returns"]
    assert returns[0] == {"arm": "policy", "episodes": 1, "mean_return": 2.25, "std_return": 0.0}


def test_exploring_sessions_get_clipped_noise_and_record_it(api: Api) -> None:
    _, weights = _arm_with_champion(api)
    actor = NumpyActor.from_bytes(weights)
    explore = {"noise": "gaussian", "sigma": 0.5, "percent": 100}
    assert api.client.put("/models/arm/experience", json={"record": True, "explore": explore}).status_code == 200
    low, high = np.array([-2.0, -0.5], np.float32), np.array([2.0, 0.5], np.float32)
    rng = np.random.default_rng(5)
    actions = []
    for _ in range(30):
        observation = rng.normal(size=4).astype(np.float32)
        body = {"model": "arm", "session": "x", "observation": observation.tolist(), "reward": 0.0}
        answer = api.client.post("/act", json=body).json()["action"]
        assert (np.asarray(answer) >= low).all() and (np.asarray(answer) <= high).all()
        actions.append((observation, answer))
    api.client.post("/act", json={"model": "arm", "session": "x", "observation": [0, 0, 0, 0], "truncated": True})
    _flush(api)
    recorded = _recorded(api)
    assert len(recorded) == 30
    assert (recorded.noise_scale == np.float32(0.5)).all()
    order = np.argsort(recorded.step)
    for row, (observation, answer) in zip(order, actions, strict=True):
        policy = actor.act(observation[None])[0]
        assert recorded.action[row].tolist() == np.asarray(answer, np.float32).tolist()
        expected = np.clip(policy + recorded.noise[row], low, high)
        assert np.allclose(recorded.action[row], expected, atol=1e-5)
    assert np.abs(recorded.noise).max() > 0
    returns = {r["arm"]: r for r in api.client.get("/models/arm/experience").json()["returns"]}
    assert returns["explore"]["episodes"] == 1 and returns["policy"]["episodes"] == 0
    # A request without a session is never explored.
    plain = api.client.post("/act", json={"model": "arm", "observation": [0.1, 0, 0, 0]}).json()["action"]
    assert np.allclose(plain, actor.act(np.array([[0.1, 0, 0, 0]], np.float32))[0], atol=1e-5)


def test_retention_keeps_the_newest_chunks(make_api: Any) -> None:
    api = make_api(experience_flush_seconds=60)  # one chunk per explicit flush: no background flush in between
    _arm_with_champion(api)
    api.client.put("/models/arm/experience", json={"record": True, "max_transitions": 10})
    for flush in range(4):
        for step in range(8):
            body = {"model": "arm", "session": f"k{flush}", "observation": [step, 0, 0, 0], "reward": 1.0}
            api.client.post("/act", json=body)
        api.client.post("/act", json={"model": "arm", "session": f"k{flush}", "observation": [0] * 4, "done": True})
        _flush(api)
    stats = api.client.get("/models/arm/experience").json()
    # Chunks of 8: the newest two reach the limit of 10; the older two are deleted.
    assert stats["chunks"] == 2 and stats["transitions"] == 16


def test_drops_are_counted_never_silent(make_api: Any) -> None:
    # No background flush during the test: the buffer stays full until the test flushes.
    api = make_api(experience_buffer_transitions=3, experience_flush_seconds=60)
    _arm_with_champion(api)
    api.client.put("/models/arm/experience", json={"record": True})
    for step in range(6):  # 5 transitions completed: 3 fit the buffer, 2 are dropped
        api.client.post("/act", json={"model": "arm", "session": "full", "observation": [step, 0, 0, 0], "reward": 1})
    # A session dropped while it holds a step: that step's transition is lost, and counted.
    api.client.post("/act", json={"model": "arm", "session": "idle", "observation": [9, 0, 0, 0]})
    sessions = api.client.app.state.act_runtime.routing.sessions  # type: ignore[attr-defined]

    async def expire_all() -> int:
        return int(sessions.expire(now=float("inf")))

    assert api.client.portal.call(expire_all) == 2  # type: ignore[union-attr]
    _flush(api)
    stats = api.client.get("/models/arm/experience").json()
    assert stats["transitions"] == 3
    assert stats["dropped"] == 4  # 2 for the full buffer, 1 each for the two sessions' held steps
    metrics = api.client.get("/metrics").text
    assert 'experience_dropped_transitions_total{model="arm",reason="buffer_full"} 2.0' in metrics
    assert 'experience_dropped_transitions_total{model="arm",reason="session_dropped"} 2.0' in metrics
