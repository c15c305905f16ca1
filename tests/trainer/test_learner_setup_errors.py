"""A learner that cannot run ends `failed` with a reason a user can act on, instead of crashing its process (which
would be restarted, take the learner over and fail the same way again)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import learners
from store.registry import create_model
from store.tables.work_queues import Learner
from trainer.online.process import LearnerOptions, LearnerProcess

UNBOUNDED = {
    "obs_dim": 2,
    "act_dim": 1,
    "observation_low": [None, None],
    "observation_high": [None, None],
    "action_low": [None],
    "action_high": [None],
    "reward_range": None,
}


@pytest.mark.parametrize(
    ("spaces", "config", "reason"),
    [
        (UNBOUNDED, {"preset": "default"}, "needs finite action bounds"),
        ({**UNBOUNDED, "action_low": [-1.0], "action_high": [1.0]}, {"preset": "default", "gamma": 7.0}, "gamma"),
    ],
)
def test_a_learner_that_cannot_run_fails_with_its_reason(
    database_url: str,
    sessions: sessionmaker[Session],
    spaces: dict[str, object],
    config: dict[str, object],
    reason: str,
) -> None:
    with sessions() as session:
        model = create_model(session, name="bad", env_id=None, spaces=spaces)
        learner = learners.start_learner(
            session, model, config=config, publish_every=10, publish="champion", canary=None, exploration=None
        )
        session.commit()
        learner_id = learner.id
    options = LearnerOptions(database_url=database_url, worker_id="test", once=True, poll_interval=0.1)
    LearnerProcess(options, stop=threading.Event()).run()
    with sessions() as session:
        row = session.get(Learner, learner_id)
        assert row is not None and row.status == "failed" and reason in (row.error or ""), row.error
