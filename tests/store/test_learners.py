"""Learners as leased work: one live learner per model, takeover after an expired lease, stopping and replacing from
the API side, and publishing as champion or as a canary's challenger with the checkpoint in the same write."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store import learners, rollouts
from store.policies import get_serving_state
from store.tables.base import utcnow
from store.tables.work_queues import Learner, LearnerPublication
from tests.conftest import make_actor_bytes, model_named

COUNTERS = learners.Counters(transitions_consumed=1000, updates=900, cursor=5, pending=0, publishes=1)


def _start(session: Session, **overrides: object) -> Learner:
    values: dict[str, object] = {
        "config": {"preset": "default"},
        "publish_every": 100,
        "publish": "champion",
        "canary": None,
        "exploration": None,
    }
    values.update(overrides)
    learner = learners.start_learner(session, model_named(session, "pendulum"), **values)  # type: ignore[arg-type]
    session.commit()
    return learner


def test_an_expired_lease_queues_the_learner_for_takeover(session: Session) -> None:
    learner = _start(session)
    claimed = learners.claim_next_learner(session, worker_id="a", lease_seconds=5)
    assert claimed is not None and claimed.id == learner.id and claimed.attempts == 1
    assert learners.claim_next_learner(session, worker_id="b", lease_seconds=5) is None
    assert learners.expire_stale_learner_leases(session, now=utcnow() + timedelta(seconds=10)) == [learner.id]
    session.refresh(learner)
    assert learner.status == "queued" and "stopped heartbeating" in (learner.error or "") and learner.worker_id is None
    taken = learners.claim_next_learner(session, worker_id="b", lease_seconds=5)
    assert taken is not None and taken.attempts == 2 and taken.worker_id == "b"
    # The first holder's writes are refused from now on.
    with pytest.raises(learners.LearnerLeaseLostError):
        learners.heartbeat_learner(session, learner.id, worker_id="a", lease_seconds=5)


def test_publishing_as_champion_stores_the_policy_the_checkpoint_and_the_counters(session: Session) -> None:
    learner = _start(session)
    assert learners.claim_next_learner(session, worker_id="a", lease_seconds=30) is not None
    policy_id = learners.publish_policy(
        session, learner.id, worker_id="a", weights=make_actor_bytes(None), checkpoint=b"ckpt", counters=COUNTERS
    )
    assert get_serving_state(session)[0] == policy_id
    session.refresh(learner)
    assert (learner.updates, learner.cursor, learner.publishes, learner.last_policy_id) == (900, 5, 1, policy_id)
    assert learners.learner_checkpoint(session, learner.id) == b"ckpt"
    (published,) = learners.publications(session, learner.id)
    assert (published.policy_id, published.role, published.updates) == (policy_id, "champion", 900)


def test_a_canary_learner_tries_each_publish_against_the_champion(session: Session) -> None:
    canary = {"percent": 30.0, "min_episodes": 5, "max_regression": 50.0, "min_improvement": 10.0}
    learner = _start(session, publish="canary", canary=canary)
    assert learners.claim_next_learner(session, worker_id="a", lease_seconds=30) is not None
    ids = [
        learners.publish_policy(
            session,
            learner.id,
            worker_id="a",
            weights=make_actor_bytes(None, seed=i),
            checkpoint=b"",
            counters=COUNTERS,
        )
        for i in range(3)
    ]
    model = model_named(session, "pendulum")
    # The first, with no champion to compare against, became champion; each later one the canary's challenger.
    assert get_serving_state(session)[0] == ids[0]
    active = rollouts.get_active_rollout(session, model.id)
    assert active is not None and active.challenger_id == ids[2] and active.mode == "canary"
    assert (active.percent, active.min_episodes, active.min_improvement) == (30.0, 5, 10.0)
    roles = {p.policy_id: p.role for p in session.query(LearnerPublication)}
    assert roles == {ids[0]: "champion_first", ids[1]: "challenger", ids[2]: "challenger"}
    replaced = [r for r in rollouts.rollout_history(session, model.id) if r.challenger_id == ids[1]]
    assert replaced[0].status == "ended" and "replaced" in (replaced[0].end_reason or "")


def test_stopping_and_replacing_end_the_row_at_once(session: Session) -> None:
    first = _start(session)
    assert learners.claim_next_learner(session, worker_id="a", lease_seconds=30) is not None
    learners.publish_policy(
        session, first.id, worker_id="a", weights=make_actor_bytes(None), checkpoint=b"ckpt", counters=COUNTERS
    )
    second = _start(session, publish_every=50)
    session.refresh(first)
    assert first.status == "cancelled" and "replaced" in (first.error or "")
    # The replacement carries on from the old one's checkpoint and counters.
    assert learners.learner_checkpoint(session, second.id) == b"ckpt" and second.updates == 900
    with pytest.raises(learners.LearnerLeaseLostError):
        learners.record_progress(session, first.id, worker_id="a", counters=COUNTERS, lease_seconds=30)
    learners.stop_learner(session, model_named(session, "pendulum"))
    session.commit()
    session.refresh(second)
    assert second.status == "cancelled" and second.error == "stopped by request"
    with pytest.raises(learners.LearnerNotFoundError):
        learners.stop_learner(session, model_named(session, "pendulum"))
    latest = learners.latest_learner(session, model_named(session, "pendulum").id)
    assert latest is not None and latest.id == second.id
