"""The bootstrap job of `python -m app`: queued once, even when API replicas start at the same moment."""

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.infra.embedded import queue_bootstrap_job
from store.jobs import enqueue_job, lock_queue
from store.tables.work_queues import Job


def _bootstrap(sessions: sessionmaker[Session]) -> int | None:
    return queue_bootstrap_job(sessions, preset="default", episodes=3, max_queued=10)


def _jobs(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_queued_when_there_is_no_policy_and_no_job_then_not_again(sessions: sessionmaker[Session]) -> None:
    assert _bootstrap(sessions) is not None
    assert _bootstrap(sessions) is None
    assert _jobs(sessions) == 1


def test_a_replica_that_checks_while_another_enqueues_waits_and_then_sees_its_job(
    sessions: sessionmaker[Session],
) -> None:
    # Replica A holds the enqueue lock (as during its own check-then-insert); replica B's bootstrap starts now.
    # B must wait for A before it checks anything: checking first, it would see no job and queue a second one.
    with sessions() as replica_a:
        lock_queue(replica_a)
        result: list[int | None] = []
        replica_b = threading.Thread(target=lambda: result.append(_bootstrap(sessions)))
        replica_b.start()
        replica_b.join(timeout=1.0)
        assert replica_b.is_alive(), "replica B checked for jobs while replica A held the enqueue lock"
        enqueue_job(replica_a, config={"preset": "default"}, promote="if_better", max_queued=10)  # commits
    replica_b.join(timeout=30)
    assert result == [None]
    assert _jobs(sessions) == 1
