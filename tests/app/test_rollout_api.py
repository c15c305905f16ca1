"""Rollouts over HTTP in one process: the canary split by session, sticky episodes across promotion and rollback,
live returns and the guard, shadow comparisons, and every bad rollout request refused with nothing changed."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.serving.runtime import ActRuntime
from tests.app.conftest import Api
from tests.app.factories import assert_error_shape, make_policy_bytes

OBS = [0.3, -0.2, 0.5]


@pytest.fixture
def trial(api: Api) -> tuple[Api, int, int]:
    champion = api.add_policy(make_policy_bytes(1, eval_mean_return=-150.0), promote="always")
    challenger = api.add_policy(make_policy_bytes(2, eval_mean_return=-900.0))
    return api, champion, challenger


def runtime(api: Api) -> ActRuntime:
    value: ActRuntime = api.client.app.state.act_runtime  # type: ignore[attr-defined]
    return value


def flush(api: Api) -> None:
    """Write this process's live returns now (and apply the guard), instead of waiting for the flusher task."""
    api.client.portal.call(runtime(api).routing.live.flush)  # type: ignore[union-attr]
    api.refresh()


def act(api: Api, **body: object) -> dict[str, object]:
    response = api.client.post("/act", json={"observation": OBS, **body})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def start(api: Api, challenger: int, **body: object) -> dict[str, object]:
    response = api.client.put("/models/pendulum/rollout", json={"challenger": challenger, **body})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_a_canary_splits_sessions_and_never_switches_one(trial: tuple[Api, int, int]) -> None:
    api, champion, challenger = trial
    rollout = start(api, challenger, mode="canary", percent=50)
    assert rollout["status"] == "active" and rollout["champion_id"] == champion
    served: dict[str, set[object]] = {}
    for step in range(5):
        for s in range(60):
            body = act(api, session=f"episode-{s}", reward=-1.0 if step else None)
            served.setdefault(f"episode-{s}", set()).add(body["policy_id"])
    assert all(len(policies) == 1 for policies in served.values())
    sides = Counter(next(iter(policies)) for policies in served.values())
    assert set(sides) == {champion, challenger} and 15 <= sides[challenger] <= 45
    # Without a session every request is routed on its own: both sides answer.
    assert {act(api)["policy_id"] for _ in range(60)} == {champion, challenger}


def test_promotion_and_rollback_apply_to_sessions_that_start_after_them(trial: tuple[Api, int, int]) -> None:
    api, champion, challenger = trial
    start(api, challenger, mode="canary", percent=50)
    pinned = {f"s{i}": act(api, session=f"s{i}")["policy_id"] for i in range(30)}
    assert api.client.post("/models/pendulum/rollout/promote").json()["status"] == "promoted"
    for session, policy_id in pinned.items():  # mid-episode: nobody switches
        assert act(api, session=session, reward=-1.0)["policy_id"] == policy_id
    assert act(api, session="after-promotion")["policy_id"] == challenger
    # An episode that ends starts the next one under what serves now.
    old = next(s for s, p in pinned.items() if p == champion)
    act(api, session=old, reward=-1.0, done=True)
    assert act(api, session=old)["policy_id"] == challenger
    # A rollback mid-episode: the session on the challenger keeps it, new sessions get the champion only.
    start(api, champion, mode="canary", percent=100)
    assert act(api, session="on-trial")["policy_id"] == champion
    assert api.client.post("/models/pendulum/rollout/rollback").json()["status"] == "rolled_back"
    assert act(api, session="on-trial", reward=-1.0)["policy_id"] == champion
    assert {act(api, session=f"new-{i}")["policy_id"] for i in range(10)} == {challenger}


def test_live_returns_and_the_guard(trial: tuple[Api, int, int]) -> None:
    api, champion, challenger = trial
    start(api, challenger, mode="canary", percent=50, guard={"min_episodes": 5, "max_regression": 10.0})
    sessions = [f"ep-{i}" for i in range(40)]
    sides = {s: act(api, session=s)["policy_id"] for s in sessions}
    for s in sessions:  # the challenger's episodes return -30, the champion's -5 (Pendulum's rewards are in [-16.3, 0])
        reward = -15.0 if sides[s] == challenger else -2.5
        act(api, session=s, reward=reward)
        act(api, session=s, reward=reward, done=True)
    flush(api)
    state = api.client.get("/models/pendulum/rollout").json()
    assert state["active"] is None
    (ended, *_) = state["history"]
    assert ended["status"] == "rolled_back" and ended["ended_at"] is not None and "guard" in ended["end_reason"]
    live = {row["role"]: row for row in ended["live"]}
    assert live["challenger"]["mean_return"] == pytest.approx(-30.0)
    assert live["champion"]["mean_return"] == pytest.approx(-5.0)
    assert ended["guard_statistic"] == "mean"  # Pendulum declares its reward range
    assert live["challenger"]["episodes"] == Counter(sides.values())[challenger]
    # Rolled back everywhere in this process: new sessions and requests get the champion.
    assert {act(api, session=f"later-{i}")["policy_id"] for i in range(20)} == {champion}
    metrics = api.client.get("/metrics").text
    means = {
        sample.labels["policy_id"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "live_return_mean" and sample.labels["rollout_id"] == str(ended["id"])
    }
    assert means == {str(champion): pytest.approx(-5.0), str(challenger): pytest.approx(-30.0)}


def test_live_returns_carry_a_confidence_interval(trial: tuple[Api, int, int]) -> None:
    api, champion, challenger = trial
    start(api, challenger, mode="canary", percent=0, guard=None)
    for i, total in enumerate((-10.0, -12.0, -14.0)):
        act(api, session=f"e{i}")
        act(api, session=f"e{i}", reward=total, done=True)
    flush(api)
    (live,) = [row for row in api.client.get("/models/pendulum/rollout").json()["active"]["live"] if row["episodes"]]
    assert live["policy_id"] == champion and live["episodes"] == 3 and live["mean_return"] == pytest.approx(-12.0)
    assert live["ci95_low"] == pytest.approx(-12.0 - 1.959964 * 2.0 / 3**0.5)
    assert live["ci95_high"] == pytest.approx(-12.0 + 1.959964 * 2.0 / 3**0.5)
    assert live["trimmed_mean_return"] == pytest.approx(-12.0)  # one episode each side left out


def test_shadow_compares_without_changing_any_answer(trial: tuple[Api, int, int]) -> None:
    api, champion, challenger = trial
    start(api, challenger, mode="shadow", percent=100)
    assert {act(api)["policy_id"] for _ in range(20)} == {champion}
    assert act(api, session="s")["policy_id"] == champion
    batch = api.client.post("/act", json={"observations": [OBS, OBS]}).json()
    assert batch["policy_id"] == champion
    shadow_queue = runtime(api).routing.shadow
    api.client.portal.call(shadow_queue.drain)  # type: ignore[union-attr]  # on the loop, as its task does
    assert shadow_queue.compared == 22
    flush(api)
    shadow = api.client.get("/models/pendulum/rollout").json()["active"]["shadow"]
    assert shadow["samples"] == 23 and shadow["mean_divergence"] > 0 and shadow["mean_latency_seconds"] >= 0
    metrics = api.client.get("/metrics").text
    assert 'shadow_divergence_count{dim="0",model="pendulum"} 23.0' in metrics
    assert 'shadow_latency_seconds_count{model="pendulum"} 22.0' in metrics


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"challenger": 2, "mode": "canary", "percent": 101}, 422, "percent"),
        ({"challenger": 2, "mode": "canary", "percent": -1}, 422, "percent"),
        ({"challenger": 2, "mode": "blue", "percent": 10}, 422, "mode"),
        ({"challenger": 2, "percent": 10}, 422, "mode"),
        ({"challenger": 999, "mode": "canary", "percent": 10}, 422, "challenger"),
        ({"challenger": 1, "mode": "canary", "percent": 10}, 422, "challenger"),  # the champion itself
        ({"challenger": 2, "mode": "canary", "percent": 10, "guard": {"min_episodes": 0}}, 422, "guard.min_episodes"),
        ({"challenger": 2, "mode": "canary", "percent": 10, "extra": True}, 422, "extra"),
    ],
)
def test_bad_rollouts_are_refused_naming_the_field(
    trial: tuple[Api, int, int], body: dict[str, object], status: int, field: str
) -> None:
    api, _champion, _challenger = trial
    response = api.client.put("/models/pendulum/rollout", json=body)
    assert response.status_code == status, response.text
    assert assert_error_shape(response.json())["details"][0]["field"] == field  # type: ignore[index]
    assert api.client.get("/models/pendulum/rollout").json() == {"model": "pendulum", "active": None, "history": []}


def test_a_challenger_of_another_model_and_no_rollout_to_end(trial: tuple[Api, int, int]) -> None:
    api, _champion, _challenger = trial
    api.client.post("/models", json={"name": "car", "env_id": "MountainCarContinuous-v0"})
    response = api.client.put("/models/car/rollout", json={"challenger": 2, "mode": "canary", "percent": 10})
    assert response.status_code == 422 and "belongs to model 'pendulum'" in response.text
    for method, path in [
        ("DELETE", "/models/pendulum/rollout"),
        ("POST", "/models/pendulum/rollout/promote"),
        ("POST", "/models/pendulum/rollout/rollback"),
    ]:
        response = api.client.request(method, path)
        assert response.status_code == 409, path
        assert_error_shape(response.json(), "conflict")


def test_retuning_keeps_the_rollout_and_delete_ends_it(trial: tuple[Api, int, int]) -> None:
    api, champion, challenger = trial
    first = start(api, challenger, mode="shadow", percent=10)
    retuned = start(api, challenger, mode="canary", percent=100, guard=None)
    assert retuned["id"] == first["id"] and retuned["mode"] == "canary" and retuned["guard"] is None
    assert act(api)["policy_id"] == challenger
    ended = api.client.delete("/models/pendulum/rollout").json()
    assert ended["status"] == "ended" and ended["end_reason"] == "ended by request"
    assert act(api)["policy_id"] == champion
    assert api.client.get("/models/pendulum").json()["aliases"] == {"champion": champion}


def test_a_reward_outside_the_models_declared_range_is_a_422(trial: tuple[Api, int, int]) -> None:
    api, _champion, _challenger = trial
    pendulum = api.client.get("/models/pendulum").json()
    assert pendulum["spaces"]["reward_range"] == [pytest.approx(-16.2736044), 0.0]
    act(api, session="hostile")
    for reward in (-3.4e38, -16.3, 0.01):
        response = api.client.post("/act", json={"observation": OBS, "session": "hostile", "reward": reward})
        assert response.status_code == 422, response.text
        error = assert_error_shape(response.json(), "validation_error")
        (detail,) = error["details"]  # type: ignore[misc]
        assert detail["field"] == "reward" and "reward range [-16.2736, 0]" in detail["message"], detail
    act(api, session="hostile", reward=-16.2736044, done=True)  # the bound itself is fine
    flush(api)
    # Declared at creation, or left out with null (none declared), or given explicitly.
    for body, expected in [
        ({"reward_range": None}, None),
        ({"reward_range": [-2.5, 1]}, [-2.5, 1.0]),
        ({}, [pytest.approx(-16.2736044), 0.0]),
    ]:
        name = f"m{len(str(body))}"
        created = api.client.post("/models", json={"name": name, "env_id": "Pendulum-v1", **body})
        assert created.status_code == 201, created.text
        assert created.json()["spaces"]["reward_range"] == expected
    for bad in ([0, -1], [1], [0, 1e39], "wide"):
        refused = api.client.post("/models", json={"name": "bad", "env_id": "Pendulum-v1", "reward_range": bad})
        assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"].startswith("reward_range")
