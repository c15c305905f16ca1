"""Sweeps in the database: the runners' queue (claiming, leases, ownership), trial jobs and how a sweep ends."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import jobs, sweeps
from store.policies import promote_policy, register_policy
from store.registry import champion_of
from store.sweep_trials import begin_trial, record_heldout
from store.tables.base import utcnow
from store.tables.registry import Policy
from store.tables.work_queues import Job, Sweep
from tests.conftest import make_actor_bytes

LEASE = 30.0
SPACE = {"seed": {"randint": [0, 100]}}


def _enqueue(session: Session, *, promote: str = "if_better", max_queued: int = 100) -> Sweep:
    return sweeps.enqueue_sweep(
        session,
        model="pendulum",
        base={"preset": "default", "episodes": 4},
        space=SPACE,
        trials=4,
        max_concurrent=2,
        search="tpe",
        early_stop=None,
        promote=promote,
        max_failures=1,
        max_queued=max_queued,
    )


def _claimed(session: Session, runner: str = "runner-a") -> Sweep:
    _enqueue(session)
    sweep = sweeps.claim_next_sweep(session, runner_id=runner, lease_seconds=LEASE)
    assert sweep is not None
    return sweep


def _begin(session: Session, sweep_id: int, trial: str, worker: str, **params: Any) -> int | None:
    return begin_trial(
        session,
        sweep_id=sweep_id,
        trial_id=trial,
        params=params,
        config={"preset": "default", "episodes": 4, **params},
        worker_id=worker,
        node="node-1",
        node_ip="127.0.0.1",
        lease_seconds=LEASE,
    )


def _finish_trial(session: Session, job_id: int, worker: str, *, eval_return: float, heldout: float) -> None:
    jobs.record_evaluation(
        session, job_id, worker_id=worker, episode=3, env_steps=800, mean_return=eval_return, std_return=1.0,
        wall_time=1.0,
    )  # fmt: skip
    record_heldout(session, job_id, worker_id=worker, mean_return=heldout, std_return=2.0)
    jobs.complete_job(session, job_id, worker_id=worker, weights=make_actor_bytes(eval_return, seed=job_id))


def test_a_queued_sweep_is_claimed_once_with_a_lease(session: Session) -> None:
    queued = _enqueue(session)
    assert (queued.status, queued.cancel_requested) == ("queued", False)
    claimed = sweeps.claim_next_sweep(session, runner_id="runner-a", lease_seconds=LEASE)
    assert claimed is not None and claimed.id == queued.id
    assert (claimed.status, claimed.runner_id) == ("running", "runner-a")
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at > utcnow()
    assert sweeps.claim_next_sweep(session, runner_id="runner-b", lease_seconds=LEASE) is None


def test_the_queue_limit_counts_queued_sweeps(session: Session) -> None:
    _enqueue(session, max_queued=1)
    with pytest.raises(jobs.QueueFullError, match="limit is 1"):
        _enqueue(session, max_queued=1)


def test_concurrent_runners_never_claim_the_same_sweep(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for _ in range(3):
            _enqueue(session)
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def runner(name: str) -> None:
        start.wait()
        with sessions() as session:
            sweep = sweeps.claim_next_sweep(session, runner_id=name, lease_seconds=LEASE)
        if sweep is not None:
            with lock:
                claimed.append(sweep.id)

    threads = [threading.Thread(target=runner, args=(f"runner-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 3


def test_only_the_holder_renews_and_another_runner_is_refused(session: Session) -> None:
    sweep = _claimed(session)
    assert sweeps.heartbeat_sweep(session, sweep.id, runner_id="runner-a", lease_seconds=LEASE) is False
    with pytest.raises(sweeps.SweepLeaseLostError, match="runner-a"):
        sweeps.heartbeat_sweep(session, sweep.id, runner_id="runner-b", lease_seconds=LEASE)
    with pytest.raises(sweeps.SweepLeaseLostError):
        sweeps.finish_sweep(session, sweep.id, runner_id="runner-b", status="succeeded")


def test_a_sweep_whose_runner_stopped_heartbeating_fails_with_the_reason(session: Session) -> None:
    sweep = _claimed(session)
    expired = sweeps.expire_stale_sweep_leases(session, now=utcnow() + timedelta(seconds=LEASE + 1))
    assert expired == [sweep.id]
    stored = sweeps.get_sweep(session, sweep.id)
    assert stored is not None and stored.status == "failed"
    assert stored.error is not None and "runner-a stopped heartbeating" in stored.error
    with pytest.raises(sweeps.SweepLeaseLostError):
        sweeps.heartbeat_sweep(session, sweep.id, runner_id="runner-a", lease_seconds=LEASE)


def test_trial_jobs_run_under_their_trial_and_are_never_claimed_by_the_job_worker(session: Session) -> None:
    sweep = _claimed(session)
    job_id = _begin(session, sweep.id, "t1", "ray-t1-a", seed=7)
    assert job_id is not None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    assert (job.status, job.worker_id, job.promote, job.max_attempts) == ("running", "ray-t1-a", "never", 1)
    assert job.config == {"preset": "default", "episodes": 4, "seed": 7}
    assert jobs.claim_next_job(session, worker_id="plain-worker", lease_seconds=LEASE) is None
    assert jobs.record_episode(
        session, job_id, worker_id="ray-t1-a", lease_seconds=LEASE, episode=0, episode_return=-900.0,
        avg_return_10=-900.0, env_steps=200, wall_time=0.1,
    ) is False  # fmt: skip
    [(trial, trial_job)] = sweeps.trials_of(session, sweep.id)
    assert (trial.trial_id, trial.node, trial.params, trial_job.id) == ("t1", "node-1", {"seed": 7}, job_id)


def test_a_retried_trial_takes_its_job_over_and_the_old_attempt_can_no_longer_write(session: Session) -> None:
    sweep = _claimed(session)
    job_id = _begin(session, sweep.id, "t1", "ray-t1-a")
    assert job_id is not None
    jobs.record_episode(
        session, job_id, worker_id="ray-t1-a", lease_seconds=LEASE, episode=0, episode_return=-900.0,
        avg_return_10=-900.0, env_steps=200, wall_time=0.1,
    )  # fmt: skip
    assert _begin(session, sweep.id, "t1", "ray-t1-b") == job_id
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None and (job.attempts, job.worker_id, job.episodes_done) == (2, "ray-t1-b", 0)
    assert jobs.episode_history(session, job_id) == []
    with pytest.raises(jobs.LeaseLostError):
        jobs.heartbeat(session, job_id, worker_id="ray-t1-a", lease_seconds=LEASE)


def test_cancelling_a_running_sweep_asks_every_running_trial_and_refuses_new_ones(session: Session) -> None:
    sweep = _claimed(session)
    job_id = _begin(session, sweep.id, "t1", "ray-t1")
    assert job_id is not None
    sweeps.request_cancel_sweep(session, sweep.id)
    session.commit()
    assert jobs.heartbeat(session, job_id, worker_id="ray-t1", lease_seconds=LEASE) is True
    assert sweeps.heartbeat_sweep(session, sweep.id, runner_id="runner-a", lease_seconds=LEASE) is True
    assert _begin(session, sweep.id, "t2", "ray-t2") is None
    done = sweeps.finish_sweep(session, sweep.id, runner_id="runner-a", status="cancelled")
    assert done.status == "cancelled"
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None and job.status == "cancelled"


def test_cancelling_a_queued_sweep_ends_it_and_an_ended_one_is_refused(session: Session) -> None:
    sweep = _enqueue(session)
    assert sweeps.request_cancel_sweep(session, sweep.id).status == "cancelled"
    session.commit()
    with pytest.raises(jobs.JobStateError, match="already cancelled"):
        sweeps.request_cancel_sweep(session, sweep.id)
    with pytest.raises(sweeps.SweepNotFoundError):
        sweeps.request_cancel_sweep(session, 999)


def test_the_runner_ends_a_trial_tune_stopped_but_not_one_that_finished(session: Session) -> None:
    sweep = _claimed(session)
    stopped = _begin(session, sweep.id, "t1", "ray-t1")
    done = _begin(session, sweep.id, "t2", "ray-t2")
    assert stopped is not None and done is not None
    _finish_trial(session, done, "ray-t2", eval_return=-300.0, heldout=-310.0)
    reason = "stopped early by ASHA after episode 4"
    assert sweeps.end_trial(session, sweep.id, "t1", runner_id="runner-a", status="cancelled", reason=reason)
    assert not sweeps.end_trial(session, sweep.id, "t2", runner_id="runner-a", status="failed", reason="no")
    statuses = {job.id: (job.status, job.error) for _, job in sweeps.trials_of(session, sweep.id)}
    assert statuses == {stopped: ("cancelled", reason), done: ("succeeded", None)}


def test_the_best_trial_is_the_best_held_out_return_and_is_promoted_if_better(session: Session) -> None:
    sweep = _claimed(session)
    returns = {"t1": (-150.0, -400.0), "t2": (-300.0, -200.0), "t3": (-250.0, -250.0)}
    job_ids = {}
    for trial, (eval_return, heldout) in returns.items():
        job_id = _begin(session, sweep.id, trial, f"ray-{trial}")
        assert job_id is not None
        _finish_trial(session, job_id, f"ray-{trial}", eval_return=eval_return, heldout=heldout)
        job_ids[trial] = job_id
    done = sweeps.finish_sweep(session, sweep.id, runner_id="runner-a", status="succeeded")
    assert (done.status, done.best_job_id) == ("succeeded", job_ids["t2"])
    best = session.get(Job, job_ids["t2"])
    assert best is not None and done.policy_id == best.policy_id
    policy = session.get(Policy, done.policy_id)
    assert policy is not None and policy.model_id is not None
    assert champion_of(session, policy.model_id) == done.policy_id  # no champion before: if_better promotes


def test_if_better_keeps_a_better_champion(session: Session) -> None:
    champion = register_policy(session, weights=make_actor_bytes(-100.0, seed=99), promote="always")
    session.commit()
    sweep = _claimed(session)
    job_id = _begin(session, sweep.id, "t1", "ray-t1")
    assert job_id is not None
    _finish_trial(session, job_id, "ray-t1", eval_return=-200.0, heldout=-190.0)
    done = sweeps.finish_sweep(session, sweep.id, runner_id="runner-a", status="succeeded")
    assert done.policy_id is not None and done.policy_id != champion.id
    assert champion.model_id is not None and champion_of(session, champion.model_id) == champion.id
    promote_policy(session, done.policy_id)  # still promotable by hand
    session.commit()


def test_a_sweep_without_a_successful_trial_fails(session: Session) -> None:
    sweep = _claimed(session)
    job_id = _begin(session, sweep.id, "t1", "ray-t1")
    assert job_id is not None
    jobs.fail_job(session, job_id, worker_id="ray-t1", error="RuntimeError: boom")
    done = sweeps.finish_sweep(session, sweep.id, runner_id="runner-a", status="succeeded")
    assert (done.status, done.error, done.best_job_id) == ("failed", "no trial succeeded", None)
