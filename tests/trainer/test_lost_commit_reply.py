"""A write whose COMMIT reply is lost: it landed, but the writer saw OperationalError. Retrying it blindly would
fail (a second episode row hits the primary key, a second completion finds the job no longer running); the retry
reads back first, and "already recorded by me" is the write's success."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store import jobs, sweeps
from store.landed_writes import (
    episode_landed,
    evaluation_landed,
    job_ended_landed,
    sweep_finished_landed,
    trial_begun,
)
from store.sweep_trials import begin_trial, record_heldout
from store.tables.work_queues import Job, Sweep
from tests.conftest import make_actor_bytes
from trainer.claim_loop import Database
from trainer.job_recorder import JobRecorder
from trainer.records import EpisodeRecord, EvaluationRecord

T = TypeVar("T")
LEASE = 30.0


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trainer.claim_loop.Backoff.next_delay", lambda _self: 0.0)


def reply_lost(work: Callable[[Session], T], *, times: int = 1) -> Callable[[Session], T]:
    """`work`, whose first `times` runs commit and then fail as if the connection broke before the reply."""
    left = [times]

    def run(session: Session) -> T:
        result = work(session)
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("COMMIT", {}, Exception("consuming input failed: server closed the connection"))
        return result

    return run


def never_sent(work: Callable[[Session], T]) -> Callable[[Session], T]:
    """`work`, whose first run fails before anything reached the database."""
    calls = [0]

    def run(session: Session) -> T:
        calls[0] += 1
        if calls[0] == 1:
            raise OperationalError("BEGIN", {}, Exception("connection refused"))
        return work(session)

    return run


def _sweep_with_trial(sessions: sessionmaker[Session], database: Database, worker: str) -> tuple[int, int]:
    with sessions() as session:
        sweep = sweeps.enqueue_sweep(
            session, model="pendulum", base={"preset": "default", "episodes": 2}, space={"seed": {"choice": [1]}},
            trials=1, max_concurrent=1, search="grid", early_stop=None, promote="never", max_failures=0, max_queued=5,
        )  # fmt: skip
        claimed = sweeps.claim_next_sweep(session, runner_id="runner", lease_seconds=LEASE)
        assert claimed is not None and claimed.id == sweep.id
    begin: Callable[[Session], int | None] = lambda s: begin_trial(  # noqa: E731
        s, sweep_id=sweep.id, trial_id="t1", params={"seed": 1}, config={"preset": "default", "episodes": 2},
        worker_id=worker, node="n", node_ip="127.0.0.1", lease_seconds=LEASE,
    )  # fmt: skip
    job_id = database.retrying("begin", reply_lost(begin), landed=lambda s: trial_begun(s, worker_id=worker))
    assert job_id is not None
    return sweep.id, job_id


def _rows(sessions: sessionmaker[Session], job_id: int) -> tuple[Job, list[Any], list[Any]]:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job, jobs.episode_history(session, job_id), jobs.evaluation_history(session, job_id)


def test_a_trial_whose_every_write_loses_its_reply_is_recorded_once(
    database_url: str, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database.connect(database_url)
    sweep_id, job_id = _sweep_with_trial(sessions, database, "w1")
    with sessions() as session:
        assert session.query(Job).count() == 1  # one job: the retried begin_trial did not start a second

    # The recorder's episode and evaluation writes: each attempt commits, loses its reply, and is read back.
    real_retrying = database.retrying

    def lossy(what: str, work: Callable[[Session], Any], **kwargs: Any) -> Any:
        return real_retrying(what, reply_lost(work), **kwargs)

    monkeypatch.setattr(database, "retrying", lossy)
    recorder = JobRecorder(database, job_id, worker_id="w1", lease_seconds=LEASE)
    with recorder:
        for episode in range(2):
            evaluation = EvaluationRecord(episode, 200 * (episode + 1), -300.0, 1.0, 0.1) if episode == 1 else None
            assert recorder(EpisodeRecord(episode, -500.0 + episode, -500.0, 200 * (episode + 1), 0.1), evaluation)
    monkeypatch.undo()
    _, episodes, evaluations = _rows(sessions, job_id)
    assert [row.episode for row in episodes] == [0, 1] and [row.episode for row in evaluations] == [1]

    database.retrying(
        "heldout",
        reply_lost(lambda s: record_heldout(s, job_id, worker_id="w1", mean_return=-300.0, std_return=1.0)),
    )  # no read-back needed: repeating it sets the same numbers
    weights = make_actor_bytes()
    done = database.retrying(
        "complete",
        reply_lost(lambda s: jobs.complete_job(s, job_id, worker_id="w1", weights=weights)),
        landed=lambda s: job_ended_landed(s, job_id, worker_id="w1", status="succeeded"),
    )
    assert done.status == "succeeded" and done.policy_id is not None
    finished = database.retrying(
        "finish",
        reply_lost(lambda s: sweeps.finish_sweep(s, sweep_id, runner_id="runner", status="succeeded")),
        landed=lambda s: sweep_finished_landed(s, sweep_id, runner_id="runner"),
    )
    assert (finished.status, finished.best_job_id, finished.policy_id) == ("succeeded", job_id, done.policy_id)
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None and sweep.status == "succeeded"


def test_a_write_that_never_reached_the_database_is_written_by_the_retry(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    database = Database.connect(database_url)
    _, job_id = _sweep_with_trial(sessions, database, "w1")
    record = lambda s: jobs.record_episode(  # noqa: E731
        s, job_id, worker_id="w1", lease_seconds=LEASE, episode=0, episode_return=-1.0, avg_return_10=-1.0,
        env_steps=200, wall_time=0.1,
    )  # fmt: skip
    cancel = database.retrying(
        "episode", never_sent(record), landed=lambda s: episode_landed(s, job_id, worker_id="w1", episode=0)
    )
    assert cancel is False
    assert [row.episode for row in _rows(sessions, job_id)[1]] == [0]


def test_another_attempts_rows_never_pass_for_this_ones(database_url: str, sessions: sessionmaker[Session]) -> None:
    database = Database.connect(database_url)
    _, job_id = _sweep_with_trial(sessions, database, "w1")
    database.call(
        lambda s: jobs.record_episode(
            s, job_id, worker_id="w1", lease_seconds=LEASE, episode=0, episode_return=-1.0, avg_return_10=-1.0,
            env_steps=200, wall_time=0.1,
        )
    )  # fmt: skip
    with sessions() as session:
        assert episode_landed(session, job_id, worker_id="w1", episode=0) == (False,)
        assert episode_landed(session, job_id, worker_id="w2", episode=0) is None
        assert evaluation_landed(session, job_id, worker_id="w1", episode=0) is None
        assert job_ended_landed(session, job_id, worker_id="w1", status="succeeded") is None
        assert trial_begun(session, worker_id="w2") is None
