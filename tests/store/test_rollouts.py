"""Rollouts and live returns: one active trial per model, promotion and rollback, batched sums and the guard."""

from __future__ import annotations

import math

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import live_returns, policies, registry, rollouts
from store.live_returns import ReturnStats, ReturnSums, ShadowSums
from store.tables.registry import Model
from tests.conftest import make_actor_bytes, model_named


def _pendulum_with_two(session: Session) -> tuple[Model, int, int]:
    champion = policies.register_policy(session, weights=make_actor_bytes(-150.0, seed=1)).id
    challenger = policies.register_policy(session, weights=make_actor_bytes(-900.0, seed=2), promote="never").id
    session.commit()
    return model_named(session, "pendulum"), champion, challenger


def _start(session: Session, model: Model, challenger: int, **overrides: object) -> rollouts.Rollout:
    values: dict[str, object] = {"mode": "canary", "percent": 50.0, "min_episodes": 5, "max_regression": 50.0}
    values.update(overrides)
    rollout = rollouts.start_rollout(session, model, challenger_id=challenger, **values)  # type: ignore[arg-type]
    session.commit()
    return rollout


def _returns(rollout_id: int, policy_id: int, values: list[float]) -> dict[tuple[int, int], ReturnSums]:
    return {(rollout_id, policy_id): ReturnSums.of(values)}


def test_start_validates_every_field(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"challenger_id": 4242}, "challenger", "not found"),
        ({"challenger_id": champion}, "challenger", "champion"),
        ({"mode": "blue-green"}, "mode", "shadow, canary"),
        ({"percent": 100.5}, "percent", "between 0 and 100"),
        ({"percent": -1.0}, "percent", "between 0 and 100"),
        ({"min_episodes": None}, "guard", "both"),
    ]
    for overrides, field, message in cases:
        values: dict[str, object] = {
            "challenger_id": challenger,
            "mode": "canary",
            "percent": 50.0,
            "min_episodes": 5,
            "max_regression": 50.0,
        }
        values.update(overrides)
        with pytest.raises(registry.RegistryInputError, match=message) as caught:
            rollouts.start_rollout(session, model, **values)  # type: ignore[arg-type]
        assert caught.value.field == field
        session.rollback()
    assert rollouts.get_active_rollout(session, model.id) is None


def test_one_active_rollout_retuned_or_replaced(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    other = policies.register_policy(session, weights=make_actor_bytes(-500.0, seed=3), promote="never").id
    first = _start(session, model, challenger, percent=10.0)
    salt = first.salt
    retuned = _start(session, model, challenger, mode="shadow", percent=100.0)
    assert retuned.id == first.id and retuned.salt == salt and (retuned.mode, retuned.percent) == ("shadow", 100.0)
    replaced = _start(session, model, other)
    history = rollouts.rollout_history(session, model.id)
    assert [(r.id, r.status) for r in history] == [(replaced.id, "active"), (first.id, "ended")]
    assert "replaced" in (history[1].end_reason or "") and history[1].ended_at is not None
    snapshot = registry.read_snapshot(session)
    assert snapshot.models[0].rollout is not None and snapshot.models[0].rollout.challenger_id == other
    assert champion == snapshot.models[0].champion_id


def test_promote_and_rollback(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    with pytest.raises(rollouts.NoActiveRolloutError):
        rollouts.promote_rollout(session, model)
    session.rollback()
    _start(session, model, challenger)
    rolled = rollouts.end_rollout(session, model, status="rolled_back", reason="rolled back by request")
    session.commit()
    assert rolled.status == "rolled_back" and policies.get_serving_state(session)[0] == champion
    _start(session, model, challenger)
    promoted = rollouts.promote_rollout(session, model)
    session.commit()
    assert promoted.status == "promoted" and policies.get_serving_state(session)[0] == challenger
    assert rollouts.get_active_rollout(session, model.id) is None


def test_promoting_the_challenger_by_id_ends_its_rollout(session: Session) -> None:
    model, _champion, challenger = _pendulum_with_two(session)
    rollout = _start(session, model, challenger)
    policies.promote_policy(session, challenger)
    session.commit()
    session.refresh(rollout)
    assert rollout.status == "promoted"


def test_stats_are_a_mean_with_a_confidence_interval() -> None:
    values = [-100.0, -120.0, -80.0, -110.0]
    stats = ReturnStats.from_sums(len(values), sum(values), sum(v * v for v in values))
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert stats.mean == pytest.approx(mean) and stats.std == pytest.approx(std)
    assert stats.ci95 == pytest.approx(1.959964 * std / 2)
    assert ReturnStats.from_sums(1, -5.0, 25.0) == ReturnStats(1, -5.0, None, None)
    assert ReturnStats.from_sums(0, 0.0, 0.0).mean is None


def test_batches_add_up_from_several_writers(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        model, champion, challenger = _pendulum_with_two(session)
        rollout_id = _start(session, model, challenger, min_episodes=None, max_regression=None).id
    for batch in ([-100.0, -200.0], [-300.0]):  # two processes' flushes
        with sessions() as session:
            live_returns.flush(session, _returns(rollout_id, champion, batch), {rollout_id: ShadowSums(2, 0.5, 0.01)})
    with sessions() as session:
        stats = live_returns.stats(session, rollout_id, [champion, challenger])
        assert stats[champion].episodes == 3 and stats[champion].mean == pytest.approx(-200.0)
        assert stats[challenger].episodes == 0
        rollout = session.get(rollouts.Rollout, rollout_id)
        assert rollout is not None
        assert (rollout.shadow_samples, rollout.shadow_divergence_sum) == (4, pytest.approx(1.0))


def test_the_guard_rolls_back_a_worse_challenger_once_it_has_enough_episodes(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        model, champion, challenger = _pendulum_with_two(session)
        rollout_id = _start(session, model, challenger, min_episodes=5, max_regression=50.0).id
        live_returns.flush(session, _returns(rollout_id, champion, [-150.0] * 10), {})
        # Four bad episodes: below min_episodes, nothing happens yet.
        assert live_returns.flush(session, _returns(rollout_id, challenger, [-900.0] * 4), {}) == []
        assert rollouts.get_active_rollout(session, model.id) is not None
        version = registry.registry_version(session)
        ((rolled_id, reason),) = live_returns.flush(session, _returns(rollout_id, challenger, [-900.0]), {})
    with sessions() as session:
        rollout = session.get(rollouts.Rollout, rolled_id)
        assert rollout is not None and rollout.status == "rolled_back" and rollout.ended_at is not None
        assert rollout.end_reason == reason and "guard" in reason and "-900.0" in reason and "750.0 below" in reason
        assert registry.registry_version(session) == version + 1
        assert policies.get_serving_state(session)[0] == champion


def test_the_guard_spares_a_challenger_within_the_allowed_regression(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    rollout_id = _start(session, model, challenger, min_episodes=3, max_regression=50.0).id
    live_returns.flush(session, _returns(rollout_id, champion, [-150.0] * 3), {})
    assert live_returns.flush(session, _returns(rollout_id, challenger, [-190.0] * 3), {}) == []
    # A shadow challenger controls no episode: its guard never fires, whatever is recorded.
    shadow_id = _start(session, model, challenger, mode="shadow", min_episodes=1, max_regression=0.0).id
    assert shadow_id == rollout_id
    assert live_returns.flush(session, _returns(rollout_id, challenger, [-5000.0]), {}) == []
    assert rollouts.get_active_rollout(session, model.id) is not None


def test_the_champions_figure_falls_back_to_episodes_outside_the_rollout(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    live_returns.flush(session, _returns(live_returns.NO_ROLLOUT, champion, [-150.0] * 5), {})
    rollout_id = _start(session, model, challenger, percent=100.0, min_episodes=2, max_regression=10.0).id
    rolled = live_returns.flush(session, _returns(rollout_id, challenger, [-400.0, -400.0]), {})
    assert [rollout for rollout, _ in rolled] == [rollout_id]


def test_a_better_challenger_is_promoted_on_live_evidence_with_enough_episodes_on_each_side(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        model, champion, challenger = _pendulum_with_two(session)
        rollout_id = _start(session, model, challenger, min_episodes=5, max_regression=50.0, min_improvement=20.0).id
        # The challenger is far better, but the champion has only four episodes: not yet.
        live_returns.flush(session, _returns(rollout_id, champion, [-300.0] * 4), {})
        assert live_returns.flush(session, _returns(rollout_id, challenger, [-150.0] * 10), {}) == []
        assert policies.get_serving_state(session)[0] == champion
        ((ended_id, reason),) = live_returns.flush(session, _returns(rollout_id, champion, [-300.0]), {})
    with sessions() as session:
        rollout = session.get(rollouts.Rollout, ended_id)
        assert rollout is not None and rollout.status == "promoted" and rollout.ended_at is not None
        assert rollout.end_reason == reason and "promoted on live evidence" in reason and "150.0 above" in reason
        assert policies.get_serving_state(session)[0] == challenger


def test_an_improvement_below_min_improvement_promotes_nothing(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    rollout_id = _start(session, model, challenger, min_episodes=3, max_regression=50.0, min_improvement=20.0).id
    live_returns.flush(session, _returns(rollout_id, champion, [-160.0] * 3), {})
    assert live_returns.flush(session, _returns(rollout_id, challenger, [-150.0] * 30), {}) == []
    assert rollouts.get_active_rollout(session, model.id) is not None
    assert policies.get_serving_state(session)[0] == champion
