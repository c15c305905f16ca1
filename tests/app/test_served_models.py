"""The pieces behind models, sessions and rollouts, each on its own: the /act body's extra fields, the canary split,
the session table, the batched live returns and the shadow queue."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import orjson
import pytest

from app.infra.errors import ApiError
from app.infra.loop_metrics import LoopCounter
from app.infra.metrics import Metrics
from app.serving.live_returns import LiveReturns
from app.serving.observations import ActExtras, parse_act_body
from app.serving.policy_cache import LoadedPolicy
from app.serving.served_models import ActiveRollout, ServedModel, canary_arm, choose, session_bucket
from app.serving.sessions import SessionTable
from app.serving.shadow import ShadowComparisons
from models.policy import NumpyActor
from store.live_returns import ReturnSums, ShadowSums
from tests.app.factories import make_policy_bytes


def _loaded(seed: int, model_id: int = 1) -> LoadedPolicy:
    return LoadedPolicy(seed, NumpyActor.from_bytes(make_policy_bytes(seed)), model_id)


def _model(percent: float, mode: str = "canary", salt: str = "0123456789abcdef") -> ServedModel:
    rollout = ActiveRollout.build(7, mode, percent, salt, _loaded(2))
    return ServedModel(1, "pendulum", "Pendulum-v1", 3, 1, _loaded(1), rollout)


# ---- the /act body ----------------------------------------------------------------------------------------------


def test_a_body_of_observations_alone_has_no_extras() -> None:
    assert parse_act_body(b'{"observation": [1, 2, 3]}', 4).extras is None
    assert parse_act_body(b'{"observation": [1, 2, 3], "model": null, "session": null}', 4).extras is None


def test_model_session_reward_and_done_are_parsed() -> None:
    body = {"observation": [1, 2, 3], "model": "car", "session": "ep-1", "reward": -3, "done": True}
    parsed = parse_act_body(orjson.dumps(body), 4)
    assert parsed.extras == ActExtras(None, "car", "ep-1", -3.0, True)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"model": 5}, "model", "model name"),
        ({"model": ""}, "model", "model name"),
        ({"session": 12}, "session", "printable"),
        ({"session": "x" * 129}, "session", "1 to 128"),
        ({"session": "a\nb"}, "session", "printable"),
        ({"reward": 1.0}, "reward", "needs a `session`"),
        ({"done": True}, "done", "needs a `session`"),
        ({"session": "s", "reward": "1"}, "reward", "must be a number"),
        ({"session": "s", "reward": True}, "reward", "must be a number"),
        ({"session": "s", "done": 1}, "done", "true or false"),
        ({"policy_id": 0}, "policy_id", "positive"),
        ({"sesion": "s"}, "sesion", "unknown field"),
    ],
)
def test_bad_extra_fields_are_422_naming_the_field(extra: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_act_body(orjson.dumps({"observation": [1, 2, 3], **extra}), 4)
    assert caught.value.status_code == 422
    assert caught.value.details[0]["field"] == field and message in caught.value.details[0]["message"]


def test_a_session_takes_one_observation_per_request() -> None:
    with pytest.raises(ApiError) as caught:
        parse_act_body(orjson.dumps({"observations": [[1, 2, 3]], "session": "s"}), 4)
    assert caught.value.details[0]["field"] == "observations"


# ---- the split ----------------------------------------------------------------------------------------------------


def test_the_split_is_a_pure_function_of_salt_and_session() -> None:
    model = _model(50.0)
    assert model.rollout is not None
    sessions = [f"episode-{i}" for i in range(2000)]
    first = [canary_arm(model.rollout, s) for s in sessions]
    # Another process builds its own objects from the same rollout row: same answers.
    again = _model(50.0)
    assert again.rollout is not None
    assert [canary_arm(again.rollout, s) for s in sessions] == first
    share = first.count("challenger") / len(sessions)
    assert 0.45 < share < 0.55
    other_salt = _model(50.0, salt="fedcba9876543210").rollout
    assert other_salt is not None and [canary_arm(other_salt, s) for s in sessions] != first


def test_raising_the_percentage_only_moves_sessions_to_the_challenger() -> None:
    sessions = [f"s{i}" for i in range(1000)]
    rollouts = {p: _model(p).rollout for p in (0.0, 10.0, 60.0, 100.0)}
    arms = {p: [canary_arm(rollout, s) for s in sessions] for p, rollout in rollouts.items() if rollout is not None}
    assert arms.keys() == rollouts.keys()
    assert set(arms[0.0]) == {"champion"} and set(arms[100.0]) == {"challenger"}
    for low, high in ((10.0, 60.0), (60.0, 100.0)):
        assert all(h == "challenger" for lo, h in zip(arms[low], arms[high], strict=True) if lo == "challenger")
    assert session_bucket(b"salt", "s1") == session_bucket(b"salt", "s1")


def test_choose_without_a_rollout_or_in_shadow_mode_serves_the_champion() -> None:
    plain = ServedModel(1, "pendulum", "Pendulum-v1", 3, 1, _loaded(1), None)
    assert choose(plain, "s") == (plain.champion, "champion", 0)
    shadow = _model(100.0, mode="shadow")
    assert choose(shadow, "s") == (shadow.champion, "champion", 7)
    assert choose(ServedModel(1, "x", "Pendulum-v1", 3, 1, None, None), "s") is None


# ---- sessions -------------------------------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_the_oldest_makes_room() -> None:
    dropped = LoopCounter("dropped", "", ["reason"])
    table = SessionTable(idle_seconds=10, max_sessions=2, dropped=dropped)
    policy = _loaded(1)
    a = table.start(("m", "a"), policy, 0)
    table.start(("m", "b"), policy, 0)
    assert table.get(("m", "a")) is a  # now b is the least recently used
    table.start(("m", "c"), policy, 0)
    assert len(table) == 2 and table.get(("m", "b")) is None and dropped.labels("evicted").value == 1
    assert table.expire(now=a.last_seen + 5) == 0
    assert table.expire(now=a.last_seen + 60) == 2 and len(table) == 0
    assert dropped.labels("expired").value == 2


# ---- live returns -------------------------------------------------------------------------------------------------


def test_live_returns_are_summed_and_kept_when_a_write_fails() -> None:
    written: list[tuple[str, dict[tuple[int, int], ReturnSums], dict[int, ShadowSums]]] = []
    attempts: list[str] = []
    failing = True

    def write(
        flush_id: str, returns: Mapping[tuple[int, int], ReturnSums], shadow: Mapping[int, ShadowSums]
    ) -> list[tuple[int, str]]:
        attempts.append(flush_id)
        if failing:
            raise ConnectionError("database down (or the COMMIT's reply lost)")
        written.append((flush_id, dict(returns), dict(shadow)))
        return []

    live = LiveReturns(write)
    live.episode(3, 1, -100.0)
    live.episode(3, 1, -200.0)
    live.shadow(3, 2, 0.5, 0.01)
    assert asyncio.run(live.flush()) == [] and written == [] and live.failed_flushes == 1
    assert asyncio.run(live.flush()) == [] and live.failed_flushes == 2 and attempts[0] == attempts[1]
    live.episode(3, 1, -300.0)
    failing = False
    asyncio.run(live.flush())
    # The failed batch again, whole and under its id (the store adds it once), then the newer episode in its own.
    (first_id, first, shadow), (second_id, second, no_shadow) = written
    assert first_id == attempts[0] and second_id != first_id and second_id.split("-")[:2] == first_id.split("-")[:2]
    assert first == {(3, 1): ReturnSums(2, -300.0, 50_000.0, ((-109, 1, -200.0), (-95, 1, -100.0)))}
    assert first == {(3, 1): ReturnSums.of([-100.0, -200.0])}
    assert second == {(3, 1): ReturnSums.of([-300.0])} and no_shadow == {}
    assert shadow == {3: ShadowSums(2, 0.5, 0.01)}
    assert not live.pending


# ---- shadow ---------------------------------------------------------------------------------------------------------


def test_the_shadow_compares_in_batches_off_the_answer() -> None:
    metrics = Metrics()
    recorded: list[Mapping[int, ShadowSums]] = []
    live = LiveReturns(lambda _id, _returns, shadow: recorded.append(shadow) or [])  # type: ignore[func-returns-value]
    shadow = ShadowComparisons(metrics, live, capacity=3)
    champion, challenger = _loaded(1), _loaded(2)
    rollout = ActiveRollout.build(7, "shadow", 100.0, "salt", challenger)
    observations = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    for obs in observations[:3]:
        shadow.submit("pendulum", rollout, obs, champion.actor.act_one(obs))
    shadow.submit("pendulum", rollout, observations[3], [0.0])  # the queue is full: dropped, counted
    assert metrics.shadow_dropped.labels("pendulum").value == 1
    assert shadow.drain() == 3 and shadow.drain() == 0
    expected = np.abs(champion.actor.act(observations[:3]) - challenger.actor.act(observations[:3])).mean()
    asyncio.run(live.flush())
    (sums,) = recorded
    assert sums[7].samples == 3 and sums[7].divergence == pytest.approx(3 * expected, rel=1e-5)
    histogram = metrics.shadow_divergence.labels("pendulum", "0")
    assert sum(histogram.counts) == 3 and histogram.sum == pytest.approx(3 * expected, rel=1e-5)


def test_counting_many_values_at_once_is_counting_them_one_by_one() -> None:
    values = np.array([0.0, 0.001, 0.002, 0.5, 3.0, 3.0001, 100.0])
    one_by_one, at_once = Metrics().shadow_divergence.labels("m", "0"), Metrics().shadow_divergence.labels("m", "0")
    for value in values:
        one_by_one.observe(float(value))
    at_once.observe_many(values)
    assert at_once.counts == one_by_one.counts and at_once.sum == pytest.approx(one_by_one.sum)
