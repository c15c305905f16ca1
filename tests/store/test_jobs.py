"""The job queue: enqueue limits (also under concurrency), claiming, progress, cancellation and lease expiry."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import jobs
from store.tables.base import utcnow
from store.tables.work_queues import Job
from tests.conftest import make_actor_bytes

LEASE = 30.0


def _enqueue(session: Session, **config: object) -> Job:
    return jobs.enqueue_job(session, config={"preset": "default", **config}, promote="if_better", max_queued=100)


def _record(session: Session, job_id: int, worker: str, episode: int, episode_return: float = -1000.0) -> bool:
    return jobs.record_episode(
        session,
        job_id,
        worker_id=worker,
        lease_seconds=LEASE,
        episode=episode,
        episode_return=episode_return,
        avg_return_10=episode_return,
        env_steps=(episode + 1) * 200,
        wall_time=0.1 * (episode + 1),
    )


def test_enqueue_stores_config_and_defaults(session: Session) -> None:
    job = jobs.enqueue_job(session, config={"preset": "seed", "episodes": 7}, promote="never", max_queued=5)
    stored = jobs.get_job(session, job.id)
    assert stored is not None
    assert stored.status == "queued"
    assert stored.config == {"preset": "seed", "episodes": 7}
    assert stored.promote == "never"
    assert stored.episodes_total == 7
    assert (stored.attempts, stored.max_attempts, stored.episodes_done, stored.cancel_requested) == (0, 1, 0, False)
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == timedelta(0)


def test_enqueue_rejects_an_unknown_promotion_rule(session: Session) -> None:
    with pytest.raises(ValueError, match="promote"):
        jobs.enqueue_job(session, config={}, promote="sometimes", max_queued=5)


def test_enqueue_refuses_beyond_the_queue_limit(session: Session) -> None:
    for _ in range(3):
        jobs.enqueue_job(session, config={}, promote="if_better", max_queued=3)
    with pytest.raises(jobs.QueueFullError, match="limit is 3"):
        jobs.enqueue_job(session, config={}, promote="if_better", max_queued=3)
    assert jobs.count_jobs_by_status(session)["queued"] == 3


def test_concurrent_enqueues_queue_exactly_the_limit(sessions: sessionmaker[Session]) -> None:
    limit, attempts = 5, 16
    barrier = threading.Barrier(attempts)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        with sessions() as session:
            barrier.wait()
            try:
                jobs.enqueue_job(session, config={}, promote="if_better", max_queued=limit)
                outcome = "queued"
            except jobs.QueueFullError:
                outcome = "full"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["full"] * (attempts - limit) + ["queued"] * limit
    with sessions() as session:
        queued, total = jobs.list_jobs(session, status="queued")
        assert total == limit
        assert len({job.id for job in queued}) == limit


def test_claim_takes_the_oldest_queued_job_once(session: Session) -> None:
    first, second = _enqueue(session), _enqueue(session)
    claimed = jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    assert claimed is not None and claimed.id == first.id
    assert (claimed.status, claimed.worker_id, claimed.attempts) == ("running", "w1", 1)
    assert claimed.lease_expires_at is not None and claimed.started_at is not None
    assert claimed.lease_expires_at > claimed.started_at
    again = jobs.claim_next_job(session, worker_id="w2", lease_seconds=LEASE)
    assert again is not None and again.id == second.id
    assert jobs.claim_next_job(session, worker_id="w3", lease_seconds=LEASE) is None


def test_concurrent_claims_never_share_a_job(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for _ in range(12):
            _enqueue(session)
    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def claim_all(worker: str) -> None:
        barrier.wait()
        with sessions() as session:
            while (job := jobs.claim_next_job(session, worker_id=worker, lease_seconds=LEASE)) is not None:
                with lock:
                    claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 12
    assert len(set(claimed)) == 12


def test_progress_history_and_completion(session: Session) -> None:
    job = _enqueue(session, episodes=3)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    jobs.set_episodes_total(session, job.id, worker_id="w1", episodes_total=3)
    for episode, episode_return in enumerate([-1200.0, -900.0, -300.0]):
        assert _record(session, job.id, "w1", episode, episode_return) is False
    jobs.record_evaluation(
        session, job.id, worker_id="w1", episode=1, env_steps=400, mean_return=-800.0, std_return=5.0, wall_time=1.0
    )
    jobs.record_evaluation(
        session, job.id, worker_id="w1", episode=2, env_steps=600, mean_return=-850.0, std_return=5.0, wall_time=2.0
    )
    done = jobs.complete_job(session, job.id, worker_id="w1", weights=make_actor_bytes(-400.0))
    assert done.status == "succeeded" and done.policy_id is not None and done.finished_at is not None
    stored = jobs.get_job(session, job.id)
    assert stored is not None
    assert (stored.episodes_total, stored.episodes_done, stored.env_steps) == (3, 3, 600)
    assert stored.last_return == -300.0
    assert stored.best_eval_return == -800.0
    assert [row.episode_return for row in jobs.episode_history(session, job.id)] == [-1200.0, -900.0, -300.0]
    assert [row.mean_return for row in jobs.evaluation_history(session, job.id)] == [-800.0, -850.0]


def test_complete_with_invalid_weights_stores_nothing(session: Session) -> None:
    job = _enqueue(session)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    with pytest.raises(ValueError, match="safetensors"):
        jobs.complete_job(session, job.id, worker_id="w1", weights=b"not an actor")
    stored = jobs.get_job(session, job.id)
    assert stored is not None and stored.status == "running" and stored.policy_id is None


def test_fail_job_keeps_the_message(session: Session) -> None:
    job = _enqueue(session)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    failed = jobs.fail_job(session, job.id, worker_id="w1", error="ValueError: invalid hidden_size: must be >= 1")
    assert failed.status == "failed" and failed.error == "ValueError: invalid hidden_size: must be >= 1"


def test_cancel_a_queued_job_ends_it_at_once(session: Session) -> None:
    job = _enqueue(session)
    cancelled = jobs.request_cancel(session, job.id)
    session.commit()
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE) is None


def test_cancel_a_running_job_asks_its_worker(session: Session) -> None:
    job = _enqueue(session)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    assert _record(session, job.id, "w1", 0) is False
    flagged = jobs.request_cancel(session, job.id)
    session.commit()
    assert (flagged.status, flagged.cancel_requested) == ("running", True)
    assert jobs.heartbeat(session, job.id, worker_id="w1", lease_seconds=LEASE) is True
    assert _record(session, job.id, "w1", 1) is True
    ended = jobs.cancel_running_job(session, job.id, worker_id="w1")
    assert ended.status == "cancelled"
    assert len(jobs.episode_history(session, job.id)) == 2


def test_cancel_of_an_ended_or_unknown_job_is_refused(session: Session) -> None:
    job = _enqueue(session)
    jobs.request_cancel(session, job.id)
    session.commit()
    with pytest.raises(jobs.JobStateError, match="already cancelled"):
        jobs.request_cancel(session, job.id)
    session.rollback()
    with pytest.raises(jobs.JobNotFoundError):
        jobs.request_cancel(session, 987654)


def test_worker_side_writes_need_the_lease(session: Session) -> None:
    job = _enqueue(session)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    with pytest.raises(jobs.LeaseLostError):
        jobs.heartbeat(session, job.id, worker_id="someone-else", lease_seconds=LEASE)
    jobs.fail_job(session, job.id, worker_id="w1", error="boom")
    with pytest.raises(jobs.LeaseLostError):
        _record(session, job.id, "w1", 0)
    with pytest.raises(jobs.LeaseLostError):
        jobs.complete_job(session, job.id, worker_id="w1", weights=make_actor_bytes())


def test_expired_lease_fails_the_job_with_reason_and_keeps_history(session: Session) -> None:
    job = _enqueue(session)
    jobs.claim_next_job(session, worker_id="w-dead", lease_seconds=LEASE)
    _record(session, job.id, "w-dead", 0)
    _record(session, job.id, "w-dead", 1)
    assert jobs.expire_stale_leases(session) == []
    later = utcnow() + timedelta(seconds=LEASE + 1)
    assert jobs.expire_stale_leases(session, now=later) == [job.id]
    stored = jobs.get_job(session, job.id)
    assert stored is not None and stored.status == "failed"
    assert stored.error is not None and stored.error.startswith("worker w-dead stopped heartbeating (lease expired at ")
    assert [row.episode for row in jobs.episode_history(session, job.id)] == [0, 1]
    assert stored.episodes_done == 2
    with pytest.raises(jobs.LeaseLostError):
        _record(session, job.id, "w-dead", 2)


def test_expired_lease_with_attempts_left_requeues_with_a_clean_history(session: Session) -> None:
    job = jobs.enqueue_job(session, config={}, promote="if_better", max_queued=5, max_attempts=2)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    _record(session, job.id, "w1", 0)
    later = utcnow() + timedelta(seconds=LEASE + 1)
    assert jobs.expire_stale_leases(session, now=later) == [job.id]
    requeued = jobs.get_job(session, job.id)
    assert requeued is not None and requeued.status == "queued"
    assert requeued.error is not None and "requeued" in requeued.error
    assert jobs.episode_history(session, job.id) == [] and requeued.episodes_done == 0
    again = jobs.claim_next_job(session, worker_id="w2", lease_seconds=LEASE)
    assert again is not None and again.id == job.id and again.attempts == 2
    assert jobs.expire_stale_leases(session, now=utcnow() + timedelta(seconds=2 * LEASE)) == [job.id]
    final = jobs.get_job(session, job.id)
    assert final is not None and final.status == "failed" and final.attempts == 2


def test_release_on_shutdown_fails_with_the_reason(session: Session) -> None:
    job = _enqueue(session)
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    released = jobs.release_job(session, job.id, worker_id="w1", reason="worker shutting down")
    assert (released.status, released.error) == ("failed", "worker shutting down")


def test_list_jobs_newest_first_filtered_and_paginated(session: Session) -> None:
    ids = [_enqueue(session).id for _ in range(5)]
    jobs.claim_next_job(session, worker_id="w1", lease_seconds=LEASE)
    page, total = jobs.list_jobs(session, limit=2, offset=1)
    assert total == 5 and [job.id for job in page] == [ids[3], ids[2]]
    running, total_running = jobs.list_jobs(session, status="running")
    assert total_running == 1 and running[0].id == ids[0]
    counts = jobs.count_jobs_by_status(session)
    assert counts == {"queued": 4, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert running[0].started_at is not None and running[0].started_at.tzinfo == UTC
