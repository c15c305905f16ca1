"""The worker loop in-process with a fake train function: outcomes, cancellation, shutdown, database outages."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

import store.db
import trainer.claim_loop
import trainer.worker
from store import jobs, policies
from store.tables.base import utcnow
from store.tables.work_queues import Job
from tests.worker.fake_training import make_fake_train
from trainer.worker import Worker, WorkerOptions, parse_args


def _options(url: str, **overrides: object) -> WorkerOptions:
    settings: dict[str, object] = {"worker_id": "test-worker", "lease_seconds": 30.0, "poll_interval": 0.05}
    settings.update(overrides)
    return WorkerOptions(database_url=url, **settings)  # type: ignore[arg-type]


def _enqueue(sessions: sessionmaker[Session], config: dict[str, object], promote: str = "if_better") -> int:
    with sessions() as session:
        return jobs.enqueue_job(session, config=config, promote=promote, max_queued=50).id


def _job(sessions: sessionmaker[Session], job_id: int) -> Job:
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job


def test_runs_a_job_to_success_with_history_and_policy(database_url: str, sessions: sessionmaker[Session]) -> None:
    job_id = _enqueue(sessions, {"preset": "default", "episodes": 4, "seed": 3})
    assert Worker(_options(database_url, once=True), train=make_fake_train()).run() == 0
    job = _job(sessions, job_id)
    assert (job.status, job.attempts, job.worker_id, job.error) == ("succeeded", 1, "test-worker", None)
    assert (job.episodes_total, job.episodes_done, job.env_steps, job.last_return) == (4, 4, 800, -700.0)
    assert job.best_eval_return == -700.0
    with sessions() as session:
        assert [row.episode_return for row in jobs.episode_history(session, job_id)] == [-1000, -900, -800, -700]
        assert [row.episode for row in jobs.evaluation_history(session, job_id)] == [1, 3]
        assert policies.get_serving_state(session) == (job.policy_id, 1)
        policy = policies.get_policy(session, job.policy_id or -1)
        assert policy is not None and policy.source_job_id == job_id


def test_promotion_rule_of_the_job_is_applied(database_url: str, sessions: sessionmaker[Session]) -> None:
    first = _enqueue(sessions, {"episodes": 3}, promote="never")
    second = _enqueue(sessions, {"episodes": 2}, promote="if_better")
    third = _enqueue(sessions, {"episodes": 1}, promote="if_better")  # worse than the second: not promoted
    assert Worker(_options(database_url, max_jobs=3), train=make_fake_train()).run() == 0
    promoted = _job(sessions, second).policy_id
    with sessions() as session:
        assert policies.get_serving_state(session) == (promoted, 1)
    assert _job(sessions, first).status == _job(sessions, third).status == "succeeded"


def test_invalid_config_fails_with_a_one_line_reason(database_url: str, sessions: sessionmaker[Session]) -> None:
    bad_preset = _enqueue(sessions, {"preset": "nope"})
    bad_field = _enqueue(sessions, {"episodes": 2, "warp_drive": True})
    assert Worker(_options(database_url, max_jobs=2), train=make_fake_train()).run() == 0
    for job_id, fragment in ((bad_preset, "unknown preset 'nope'"), (bad_field, "warp_drive")):
        job = _job(sessions, job_id)
        assert job.status == "failed"
        assert job.error is not None and fragment in job.error and job.error.startswith("ValueError: ")
        assert "Traceback" not in job.error and "\n" not in job.error


def test_a_crashing_trainer_fails_the_job_and_the_worker_goes_on(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    crashing = _enqueue(sessions, {"episodes": 5})
    healthy = _enqueue(sessions, {"episodes": 1})

    def explode(episode: int) -> None:
        if episode == 2:
            raise RuntimeError("simulated NaN in the critic\nwith a second line")

    worker = Worker(_options(database_url, max_jobs=1), train=make_fake_train(before_episode=explode))
    assert worker.run() == 0
    job = _job(sessions, crashing)
    assert (job.status, job.error, job.episodes_done) == ("failed", "RuntimeError: simulated NaN in the critic", 2)
    assert Worker(_options(database_url, once=True), train=make_fake_train()).run() == 0
    assert _job(sessions, healthy).status == "succeeded"


def test_invalid_exported_actor_fails_the_job(database_url: str, sessions: sessionmaker[Session]) -> None:
    job_id = _enqueue(sessions, {"episodes": 1})
    assert Worker(_options(database_url, once=True), train=make_fake_train(actor=b"junk")).run() == 0
    job = _job(sessions, job_id)
    assert job.status == "failed" and job.error is not None and job.error.startswith("invalid exported actor")
    with sessions() as session:
        assert policies.list_policies(session)[1] == 0


def test_cancel_of_a_running_job_stops_it_within_one_episode(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    job_id = _enqueue(sessions, {"episodes": 50})

    def cancel_during_episode_3(episode: int) -> None:
        if episode == 3:
            with sessions() as session:
                jobs.request_cancel(session, job_id)
                session.commit()

    assert Worker(_options(database_url, once=True), train=make_fake_train(cancel_during_episode_3)).run() == 0
    job = _job(sessions, job_id)
    assert job.status == "cancelled" and job.policy_id is None
    assert job.episodes_done == 4  # the episode during which the cancel arrived is the last one
    with sessions() as session:
        assert len(jobs.episode_history(session, job_id)) == 4


def test_stop_request_releases_the_job_and_exits_cleanly(database_url: str, sessions: sessionmaker[Session]) -> None:
    job_id = _enqueue(sessions, {"episodes": 50})
    queued_after = _enqueue(sessions, {"episodes": 1})
    stop = threading.Event()

    def stop_during_episode_2(episode: int) -> None:
        if episode == 2:
            stop.set()  # what the SIGTERM handler does

    worker = Worker(_options(database_url), train=make_fake_train(stop_during_episode_2), stop=stop)
    assert worker.run() == 0
    job = _job(sessions, job_id)
    assert (job.status, job.error, job.episodes_done) == ("failed", "worker shutting down", 3)
    assert _job(sessions, queued_after).status == "queued"


def test_unreachable_database_is_retried_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    attempts: list[str] = []

    def migrate_and_count(url: str) -> None:
        attempts.append(url)
        if len(attempts) >= 3:
            stop.set()  # enough retries seen; let the worker wind down
        store.db.migrate(url)

    monkeypatch.setattr(trainer.claim_loop, "migrate", migrate_and_count)
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    worker = Worker(_options(unreachable), train=make_fake_train(), stop=stop)
    assert worker.run() == 0  # neither raised nor crashed: it kept retrying with backoff
    assert len(attempts) == 3


def test_parse_args() -> None:
    options = parse_args(["--database-url", "sqlite:////tmp/x.db", "--once", "--lease-seconds", "5"])
    assert options.database_url == "sqlite:////tmp/x.db" and options.once and options.lease_seconds == 5.0
    assert options.worker_id and options.max_jobs is None


def test_a_worker_that_lost_its_lease_abandons_the_job_without_overwriting_it(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    job_id = _enqueue(sessions, {"episodes": 50})
    following = _enqueue(sessions, {"episodes": 1})

    def expire_during_episode_2(episode: int) -> None:
        if episode == 2:  # as if this worker had hung past its lease and another process noticed
            with sessions() as session:
                jobs.expire_stale_leases(session, now=utcnow() + timedelta(hours=1))

    worker = Worker(_options(database_url, max_jobs=2), train=make_fake_train(expire_during_episode_2))
    assert worker.run() == 0
    job = _job(sessions, job_id)
    assert job.status == "failed" and job.error is not None and "stopped heartbeating" in job.error
    assert job.episodes_done == 2 and job.policy_id is None
    assert _job(sessions, following).status == "succeeded"


def test_a_finished_job_never_reports_a_lost_lease(
    database_url: str,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Beats every 50 ms, and a slow step after the job's ending write: a heartbeat still running then would find the
    # job no longer running and log a lost lease for a job that succeeded.
    read_champion = trainer.worker.champion_model_name

    def slow_read(session: Session, policy_id: int) -> str | None:
        threading.Event().wait(0.3)
        return read_champion(session, policy_id)

    monkeypatch.setattr(trainer.worker, "champion_model_name", slow_read)
    job_id = _enqueue(sessions, {"episodes": 2})
    with caplog.at_level("WARNING", logger="trainer"):
        assert Worker(_options(database_url, once=True, lease_seconds=0.15), train=make_fake_train()).run() == 0
    assert _job(sessions, job_id).status == "succeeded"
    assert not [record.getMessage() for record in caplog.records if record.name == "trainer.heartbeat"]
