"""Live returns written exactly once per batch id, and the guard's trimmed mean where no reward range is declared."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import live_returns, rollouts
from store.live_returns import MEAN, TRIMMED_MEAN, ReturnSums
from store.return_buckets import bucket_of, trimmed_mean
from store.tables.base import utcnow
from store.tables.serving_records import LiveReturnFlush
from tests.store.test_rollouts import _pendulum_with_two, _returns, _start


def test_a_batch_retried_under_its_id_adds_once(session: Session) -> None:
    _model, champion, _challenger = _pendulum_with_two(session)
    batch = _returns(live_returns.NO_ROLLOUT, champion, [-100.0, -300.0])
    live_returns.flush(session, batch, {}, flush_id="42-abc-1")
    live_returns.flush(session, batch, {}, flush_id="42-abc-1")  # the retry after a lost reply
    live_returns.flush(session, batch, {}, flush_id="42-abc-2")
    stats = live_returns.stats(session, live_returns.NO_ROLLOUT, [champion])[champion]
    assert stats.episodes == 4 and stats.mean == pytest.approx(-200.0)


def test_old_flush_ids_are_deleted(session: Session) -> None:
    _pendulum_with_two(session)
    session.add(LiveReturnFlush(flush_id="old", created_at=utcnow() - timedelta(hours=2)))
    session.add(LiveReturnFlush(flush_id="recent", created_at=utcnow() - timedelta(minutes=5)))
    session.commit()
    live_returns.flush(session, {}, {}, flush_id="new")
    assert set(session.scalars(select(LiveReturnFlush.flush_id))) == {"recent", "new"}


def test_buckets_are_ordered_like_returns() -> None:
    values = [-3.4e38, -1e6, -1500.0, -1.0, -0.5, 0.0, 0.5, 1.0, 16.0, 1e300]
    buckets = [bucket_of(value) for value in values]
    assert buckets == sorted(buckets) and bucket_of(-0.5) == bucket_of(0.5) == 0
    assert bucket_of(-1500.0) == bucket_of(-1500.0 * 1.01) or bucket_of(-1500.0 * 1.01) == bucket_of(-1500.0) - 1


def test_the_trimmed_mean_drops_a_tenth_each_side_and_ignores_one_extreme_episode() -> None:
    def rows(values: list[float]) -> list[tuple[int, float]]:
        return [(count, total) for _bucket, count, total in ReturnSums.of(values).buckets]

    honest = [-150.0 - i for i in range(19)]
    assert trimmed_mean(rows(honest)) == pytest.approx(sum(sorted(honest)[2:-2]) / 15, rel=0.01)
    assert trimmed_mean(rows([*honest, -3.4e38])) == pytest.approx(sum(sorted(honest)[1:-2]) / 16, rel=0.01)
    assert trimmed_mean(rows([*honest, 3.4e38])) == pytest.approx(sum(sorted(honest)[2:-1]) / 16, rel=0.01)
    assert trimmed_mean(rows([-1.0, -2.0])) is None and trimmed_mean(rows([-5.0, -6.0, -7.0])) == -6.0


def test_without_a_reward_range_one_extreme_episode_cannot_keep_a_worse_challenger(session: Session) -> None:
    model, champion, challenger = _pendulum_with_two(session)
    model.spaces = {**model.spaces, "reward_range": None}  # none declared
    session.commit()
    assert live_returns.guard_statistic(session, model.id) == TRIMMED_MEAN
    rollout_id = _start(session, model, challenger, min_episodes=10, max_regression=100.0).id
    live_returns.flush(session, _returns(rollout_id, champion, [-3.4e38]), {})  # one poisoned champion episode
    live_returns.flush(session, _returns(rollout_id, champion, [-150.0] * 10), {})
    # The plain mean says the champion is hopeless: a challenger 900 worse would look far better.
    assert live_returns.stats(session, rollout_id, [champion])[champion].mean == pytest.approx(-3.4e38 / 11)
    ((rolled_id, reason),) = live_returns.flush(session, _returns(rollout_id, challenger, [-1050.0] * 10), {})
    assert rolled_id == rollout_id and "trimmed mean" in reason and "900.0 below" in reason, reason
    assert rollouts.get_active_rollout(session, model.id) is None


def test_a_declared_range_keeps_the_mean(session: Session) -> None:
    model, _champion, _challenger = _pendulum_with_two(session)
    assert model.spaces["reward_range"] == [pytest.approx(-16.2736044), 0.0]
    assert live_returns.guard_statistic(session, model.id) == MEAN
