"""PUT/GET/DELETE /models/{name}/learner through the app (its lifespan, the real store), and the warm-up: a learning
model without a champion answers session steps with uniform random actions within its bounds, recorded as such."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from ddpg_client import PolicyClient
from ddpg_client.drive import wait_for_learner
from models.experience_chunks import ExperienceColumns, decode_chunk
from store import learners
from store.registry import get_model
from store.tables.serving_records import ExperienceChunk
from store.tables.work_queues import Learner
from tests.app.conftest import Api, ApiFactory
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.conftest import sqlite_only

ARM = {
    "name": "arm",
    "observation_space": {"low": [-1.0, -1.0, None], "high": [1.0, 1.0, None]},
    "action_space": {"low": [-2.0, -0.5], "high": [2.0, 0.5]},
}


def _field(response: Any) -> str:
    assert response.status_code == 422, response.text
    error = assert_error_shape(response.json(), "validation_error")
    return str(error["details"][0]["field"])


def _learners(api: Api) -> list[Learner]:
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        rows = list(session.scalars(select(Learner).order_by(Learner.id)))
        session.expunge_all()
        return rows


@sqlite_only
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"batch_size": 512, "replay_size": 100}, "replay_size"),
        ({"actor_lr": "0.1"}, "actor_lr"),
        ({"episodes": 10}, "episodes"),  # not a learning field
        ({"publish_every": 0}, "publish_every"),
        ({"publish": "shadow"}, "publish"),
        ({"canary": {"percent": 120}}, "canary.percent"),
        ({"explore": {"sigma": 0}}, "explore.sigma"),
        ({"preset": "fast"}, "preset"),
    ],
)
def test_a_bad_learner_body_is_refused_naming_the_field_before_anything_is_stored(
    api: Api, body: dict[str, Any], field: str
) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    assert _field(api.client.put("/models/arm/learner", json=body)).endswith(field)
    assert _learners(api) == []


def test_the_server_budget_applies_as_for_train(api: Api) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    assert _field(api.client.put("/models/arm/learner", json={"hidden_size": 60000})) == "hidden_size"


def test_unknown_model_and_missing_learner_are_404(api: Api) -> None:
    assert api.client.put("/models/nope/learner", json={}).status_code == 404
    assert api.client.post("/models", json=ARM).status_code == 201
    assert api.client.get("/models/arm/learner").status_code == 404
    assert api.client.delete("/models/arm/learner").status_code == 404


def test_start_warm_up_replace_and_stop(api: Api) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    # No champion and no learner: no policy yet.
    assert api.client.post("/act", json={"model": "arm", "observation": [0, 0, 0], "session": "s0"}).status_code == 503
    started = api.client.put("/models/arm/learner", json={"publish_every": 100, "batch_size": 64})
    assert started.status_code == 202, started.text
    state = started.json()
    assert (state["status"], state["publish"], state["updates"], state["policies"]) == ("queued", "champion", 0, [])
    assert state["config"] == {"preset": "default", "batch_size": 64}
    # Recording and exploration were off: the learner turned them on (Gaussian, the preset's sigma, every session).
    experience = api.client.get("/models/arm/experience").json()
    assert experience["record"] is True and experience["explore"]["percent"] == 100
    # The warm-up: uniform actions within the bounds, recorded with no policy.
    actions = []
    for step in range(60):
        body: dict[str, Any] = {"model": "arm", "observation": [0.1, 0.2, float(step)], "session": "s1"}
        if step:
            body["reward"] = -1.0
        if step == 59:
            body["truncated"] = True
        answer = api.client.post("/act", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["policy_id"] == -1
        actions.append(answer.json()["action"])
    drawn = np.array(actions[:-1])
    assert np.all(drawn >= [-2.0, -0.5]) and np.all(drawn <= [2.0, 0.5])
    assert drawn[:, 0].std() > 0.5  # spread over the range, not the midpoint
    recorder = api.client.app.state.act_runtime.routing.experience  # type: ignore[attr-defined]
    api.client.portal.call(recorder.flush)  # type: ignore[union-attr]
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(ExperienceChunk.data).order_by(ExperienceChunk.id)).all()
    recorded = ExperienceColumns.concat([decode_chunk(data) for data in rows if data is not None])
    assert len(recorded) == 59 and set(recorded.policy_id.tolist()) == {-1}
    assert np.allclose(recorded.noise, recorded.action - [0.0, 0.0])
    assert bool(recorded.truncated[-1]) and not recorded.terminated.any()
    # A second learner for the model is a conflict, naming how to replace it; nothing changes.
    second = api.client.put("/models/arm/learner", json={"publish": "canary"})
    assert second.status_code == 409, second.text
    assert assert_error_shape(second.json(), "conflict")["details"][0]["field"] == "replace"
    assert [row.status for row in _learners(api)] == ["queued"]
    # Replacing: the first ends `cancelled`, the new one is the live one.
    replaced = api.client.put(
        "/models/arm/learner?replace=true", json={"publish": "canary", "canary": {"min_improvement": 5.0}}
    )
    assert replaced.status_code == 202 and replaced.json()["canary"]["min_improvement"] == 5.0
    rows = _learners(api)
    assert [row.status for row in rows] == ["cancelled", "queued"] and "replaced" in (rows[0].error or "")
    got = api.client.get("/models/arm/learner").json()
    # It starts from the first one's cursor (nothing consumed): the 59 recorded transitions are its lag.
    assert got["id"] == rows[1].id and got["lag_transitions"] == got["unlearned_transitions"] == 59
    assert api.client.delete("/models/arm/learner").status_code == 204
    assert api.client.get("/models/arm/learner").json()["status"] == "cancelled"
    api.refresh()
    # Stopped and still no champion: no warm-up any more.
    assert api.client.post("/act", json={"model": "arm", "observation": [0, 0, 0], "session": "s2"}).status_code == 503
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model = get_model(session, "arm")
        assert model is not None and learners.live_learner(session, model.id) is None


@pytest.mark.parametrize(("challenger_return", "outcome"), [(-10.0, "promoted"), (-300.0, "rolled_back")])
def test_a_canary_learners_publish_is_promoted_or_rolled_back_on_live_evidence(
    api: Api, challenger_return: float, outcome: str
) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    canary = {"percent": 50, "min_episodes": 3, "max_regression": 50, "min_improvement": 5}
    assert api.client.put("/models/arm/learner", json={"publish": "canary", "canary": canary}).status_code == 202
    # A learner process's two publishes, as store.learners writes them: the first becomes champion (nothing to try it
    # against), the second the canary's challenger.
    ids = []
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model = get_model(session, "arm")
        assert model is not None
        learner = learners.claim_next_learner(session, worker_id="learner-test", lease_seconds=60)
        assert learner is not None
        counters = learners.Counters(transitions_consumed=0, updates=0, cursor=0, pending=0, publishes=1)
        for seed in (1, 2):
            weights = make_policy_bytes(seed, obs_dim=3, act_dim=2, action_bound=0.5)
            ids.append(
                learners.publish_policy(
                    session, learner.id, worker_id="learner-test", weights=weights, checkpoint=b"", counters=counters
                )
            )
    api.refresh()
    champion, challenger = ids
    # Live episodes: the champion's sessions return -100, the challenger's better (-10) or far worse (-300).
    seen = {champion: 0, challenger: 0}
    for index in range(200):
        if min(seen.values()) >= 3:
            break
        session_id = f"live-{index}"
        first = api.client.post("/act", json={"model": "arm", "observation": [0.1, 0.2, 0.3], "session": session_id})
        policy_id = first.json()["policy_id"]
        seen[policy_id] += 1
        reward = challenger_return if policy_id == challenger else -100.0
        end = {"model": "arm", "observation": [0.1, 0.2, 0.3], "session": session_id, "reward": reward, "done": True}
        ending = api.client.post("/act", json=end)
        assert ending.status_code == 200 and ending.json()["policy_id"] == policy_id  # never a switch mid-episode
    assert min(seen.values()) >= 3
    runtime = api.client.app.state.act_runtime  # type: ignore[attr-defined]
    api.client.portal.call(runtime.routing.live.flush)  # type: ignore[union-attr]
    api.refresh()
    state = api.client.get("/models/arm/rollout").json()
    assert state["active"] is None
    ended = state["history"][0]
    assert ended["status"] == outcome and ended["challenger_id"] == challenger, ended
    if outcome == "promoted":
        assert "promoted on live evidence" in ended["end_reason"] and "90.0 above" in ended["end_reason"]
    assert api.client.get("/models/arm").json()["aliases"]["champion"] == (
        challenger if outcome == "promoted" else champion
    )
    published = api.client.get("/models/arm/learner").json()["policies"]
    assert {p["policy_id"]: p["live_episodes"] > 0 for p in published} == {champion: True, challenger: True}


def test_a_warm_up_session_keeps_its_warm_up_until_its_episode_ends(api: Api) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    assert api.client.put("/models/arm/learner", json={}).status_code == 202
    step = {"model": "arm", "observation": [0.1, 0.2, 0.3]}
    assert api.client.post("/act", json={**step, "session": "early"}).json()["policy_id"] == -1
    # -1 names the warm-up only within a session.
    assert _field(api.client.post("/act", json={**step, "policy_id": -1})) == "policy_id"
    # The learner publishes: new sessions get the champion, a session in its warm-up episode keeps it, and so does
    # one pinned to it from another process.
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        learner = learners.claim_next_learner(session, worker_id="learner-test", lease_seconds=60)
        assert learner is not None
        counters = learners.Counters(transitions_consumed=0, updates=0, cursor=0, pending=0, publishes=1)
        weights = make_policy_bytes(4, obs_dim=3, act_dim=2, action_bound=0.5)
        champion = learners.publish_policy(
            session, learner.id, worker_id="learner-test", weights=weights, checkpoint=b"", counters=counters
        )
    api.refresh()
    assert api.client.post("/act", json={**step, "session": "late"}).json()["policy_id"] == champion
    assert api.client.post("/act", json={**step, "session": "early", "reward": -1.0}).json()["policy_id"] == -1
    moved = {**step, "session": "moved", "reward": -1.0, "policy_id": -1}
    assert api.client.post("/act", json=moved).json()["policy_id"] == -1
    ended = api.client.post("/act", json={**step, "session": "early", "reward": -1.0, "done": True})
    assert ended.json()["policy_id"] == -1
    assert api.client.post("/act", json={**step, "session": "early"}).json()["policy_id"] == champion
    # Without a learner there is no warm-up to pin.
    assert api.client.delete("/models/arm/learner").status_code == 204
    api.refresh()
    assert _field(api.client.post("/act", json={**step, "session": "moved2", "policy_id": -1})) == "policy_id"


def _record_steps(api: Api, session_id: str, steps: int, *, flush: bool = True) -> None:
    """One episode of `steps` transitions recorded by the model's sessions, flushed to the store (unless not)."""
    for step in range(steps + 1):
        body: dict[str, Any] = {"model": "arm", "observation": [0.1, 0.2, float(step)], "session": session_id}
        if step:
            body["reward"] = -1.0
        if step == steps:
            body["truncated"] = True
        assert api.client.post("/act", json=body).status_code == 200
    if flush:
        recorder = api.client.app.state.act_runtime.routing.experience  # type: ignore[attr-defined]
        api.client.portal.call(recorder.flush)  # type: ignore[union-attr]


def test_the_unlearned_count_includes_what_this_process_recorded_and_has_not_written_yet(make_api: ApiFactory) -> None:
    # A flush a minute away: what the sessions record stays in this process's buffers for the whole test.
    api = make_api(experience_flush_seconds=60.0)
    assert api.client.post("/models", json=ARM).status_code == 201
    assert api.client.put("/models/arm/learner", json={"learning_starts": 10, "batch_size": 16}).status_code == 202
    _record_steps(api, "s1", 30, flush=False)
    state = api.client.get("/models/arm/learner").json()
    # Not in the store yet, so not in the lag; but a client that just drove that episode must see it as unlearned,
    # or it starts the next one at once and runs ahead of the learner by a flush interval's worth of steps.
    assert (state["lag_transitions"], state["unlearned_transitions"]) == (0, 30)
    recorder = api.client.app.state.act_runtime.routing.experience  # type: ignore[attr-defined]
    api.client.portal.call(recorder.flush)  # type: ignore[union-attr]
    state = api.client.get("/models/arm/learner").json()
    assert (state["lag_transitions"], state["unlearned_transitions"]) == (30, 30)


def test_the_lag_counts_unread_and_unlearned_transitions_and_the_rates_follow_the_counters(api: Api) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    body = {"publish_every": 100, "learning_starts": 10, "batch_size": 16}
    assert api.client.put("/models/arm/learner", json=body).status_code == 202
    _record_steps(api, "s1", 40)
    # Nothing read yet (the learner process has not even claimed it): all 40 recorded transitions are its lag.
    state = api.client.get("/models/arm/learner").json()
    assert (state["lag_transitions"], state["unlearned_transitions"]) == (40, 40)
    assert state["updates_per_second"] is None and state["transitions_per_second"] is None
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        learner = learners.claim_next_learner(session, worker_id="learner-test", lease_seconds=60)
        assert learner is not None
        cursor = session.scalar(select(ExperienceChunk.id).order_by(ExperienceChunk.id.desc()).limit(1))
        assert cursor is not None
        # It read all 40 and ran 15 of the 25 updates they are due: one per transition from the 16th on (a full batch
        # is needed too, and learning_starts is 10), as train() runs them.
        read = learners.Counters(transitions_consumed=40, updates=15, cursor=cursor, pending=0, publishes=1)
        weights = make_policy_bytes(5, obs_dim=3, act_dim=2, action_bound=0.5)
        learners.publish_policy(
            session, learner.id, worker_id="learner-test", weights=weights, checkpoint=b"", counters=read
        )
        state = api.client.get("/models/arm/learner").json()
        assert (state["lag_transitions"], state["unlearned_transitions"]) == (0, 10)
        # Recorded meanwhile: counted at the request, though the learner has not looked since.
        _record_steps(api, "s2", 30)
        state = api.client.get("/models/arm/learner").json()
        assert (state["lag_transitions"], state["unlearned_transitions"]) == (30, 40)
        # Rates: from the publish's counters to the progress written more than a second later.
        time.sleep(1.1)
        later = learners.Counters(transitions_consumed=70, updates=50, cursor=cursor + 1, pending=0, publishes=1)
        learners.record_progress(session, learner.id, worker_id="learner-test", counters=later, lease_seconds=60)
    state = api.client.get("/models/arm/learner").json()
    assert state["unlearned_transitions"] == (70 - 15) - 50 + state["lag_transitions"]
    assert 0 < state["updates_per_second"] < 40 / 1.1
    assert state["transitions_per_second"] == pytest.approx(state["updates_per_second"] * 30 / 35)


def test_drive_waits_between_episodes_while_the_learner_is_further_behind_than_max_lag(api: Api) -> None:
    assert api.client.post("/models", json=ARM).status_code == 201
    transport = api.client._transport  # the app in-process, as PolicyClient's transport
    with PolicyClient("http://testserver", transport=transport) as client:
        # No learner, or one no process runs yet: nothing to wait for.
        assert wait_for_learner(client, "arm", max_lag=0) < 1.0
        assert api.client.put("/models/arm/learner", json={"learning_starts": 10, "batch_size": 16}).status_code == 202
        _record_steps(api, "s1", 40)
        assert wait_for_learner(client, "arm", max_lag=0) < 1.0
        with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
            learner = learners.claim_next_learner(session, worker_id="learner-test", lease_seconds=60)
            assert learner is not None
            cursor = session.scalar(select(ExperienceChunk.id).order_by(ExperienceChunk.id.desc()).limit(1))
            behind = learners.Counters(transitions_consumed=40, updates=10, cursor=cursor or 0, pending=0, publishes=0)
            learners.record_progress(session, learner.id, worker_id="learner-test", counters=behind, lease_seconds=60)
            # 15 updates owed (25 due for 40 transitions, from the 16th on): within a max_lag of 15 it drives on,
            # above one of 10 it waits...
            assert wait_for_learner(client, "arm", max_lag=15) < 1.0
            waited: list[float] = []
            waiter = threading.Thread(target=lambda: waited.append(wait_for_learner(client, "arm", max_lag=10)))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive() and not waited
            # ...until the learner has run enough of them.
            caught_up = learners.Counters(
                transitions_consumed=40, updates=25, cursor=cursor or 0, pending=0, publishes=0
            )
            learners.record_progress(
                session, learner.id, worker_id="learner-test", counters=caught_up, lease_seconds=60
            )
        waiter.join(30)
        assert not waiter.is_alive() and waited and waited[0] >= 0.5
