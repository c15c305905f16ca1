"""Real worker processes (`python -m trainer worker`) running the real trainer on tiny configs.

Waits use generous deadlines only to keep a broken build from hanging; nothing asserts how fast anything is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import jobs, policies
from store.tables.work_queues import Job
from tests.processes import ChildProcess, start_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 240.0
# The real trainer, cut down to about a second of work per job.
TINY = {
    "preset": "default",
    "episodes": 2,
    "max_episode_steps": 50,
    "eval_episodes": 1,
    "hidden_size": 16,
    "batch_size": 32,
    "learning_starts": 32,
    "random_steps": 32,
}
# Long enough that it is still running when the test interrupts it; eval only at the (never reached) end.
LONG = {**TINY, "episodes": 5000, "eval_every": 0}


class WorkerProcesses:
    """Starts worker subprocesses with their output in files; kills whatever is left at teardown."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.procs: list[ChildProcess] = []

    def start(self, *args: str) -> ChildProcess:
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        # The URL goes by environment, as in deployment (argv is visible to everyone in `ps`).
        env = {**os.environ, "DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}
        proc = start_process(
            [sys.executable, "-m", "trainer", "worker", "--poll-interval=0.2", *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    group = WorkerProcesses(database_url, tmp_path)
    yield group
    group.stop_all()


def _wait_for(condition: Callable[[], bool], what: str, workers: WorkerProcesses) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}\n{workers.logs()}")
        time.sleep(0.1)


def _exit_code(proc: ChildProcess, workers: WorkerProcesses) -> int:
    try:
        return proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker {proc.pid} did not exit\n{workers.logs()}")


def _job(sessions: sessionmaker[Session], job_id: int) -> Job:
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job


def _enqueue(sessions: sessionmaker[Session], config: dict[str, object]) -> int:
    with sessions() as session:
        return jobs.enqueue_job(session, config=config, promote="if_better", max_queued=100).id


def test_four_workers_run_twelve_jobs_each_exactly_once(
    sessions: sessionmaker[Session], workers: WorkerProcesses
) -> None:
    job_ids = [_enqueue(sessions, {**TINY, "seed": seed}) for seed in range(12)]
    procs = [workers.start(f"--worker-id=w{i}") for i in range(4)]

    def all_ended() -> bool:
        with sessions() as session:
            return jobs.count_jobs_by_status(session)["succeeded"] + jobs.count_jobs_by_status(session)["failed"] == 12

    _wait_for(all_ended, "12 jobs to end", workers)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)  # idle workers exit cleanly on SIGTERM
    assert [_exit_code(proc, workers) for proc in procs] == [0, 0, 0, 0], workers.logs()

    finished = [_job(sessions, job_id) for job_id in job_ids]
    assert [job.status for job in finished] == ["succeeded"] * 12, [job.error for job in finished]
    assert [job.attempts for job in finished] == [1] * 12
    assert all(job.worker_id in {"w0", "w1", "w2", "w3"} for job in finished)
    with sessions() as session:
        stored, total = policies.list_policies(session, limit=100)
        assert total == 12
        assert sorted(policy.source_job_id or 0 for policy in stored) == sorted(job_ids)
        assert sorted(job.policy_id or 0 for job in finished) == sorted(policy.id for policy in stored)
        for job in finished:
            assert [row.episode for row in jobs.episode_history(session, job.id)] == [0, 1]
        default_id, version = policies.get_serving_state(session)
        assert default_id in {policy.id for policy in stored} and version >= 1


def test_sigkilled_worker_is_detected_by_its_lease_and_the_next_job_runs(
    sessions: sessionmaker[Session], workers: WorkerProcesses
) -> None:
    doomed = _enqueue(sessions, LONG)
    following = _enqueue(sessions, TINY)
    victim = workers.start("--worker-id=victim", "--lease-seconds=2")
    _wait_for(lambda: _job(sessions, doomed).episodes_done >= 2, "the long job to record 2 episodes", workers)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with sessions() as session:
        recorded_before_kill = len(jobs.episode_history(session, doomed))
    assert _job(sessions, doomed).status == "running"  # nobody has noticed yet

    survivor = workers.start("--worker-id=survivor", "--lease-seconds=2")
    _wait_for(lambda: _job(sessions, following).status == "succeeded", "the next job to succeed", workers)
    _wait_for(lambda: _job(sessions, doomed).status != "running", "the dead worker's job to end", workers)
    survivor.send_signal(signal.SIGTERM)
    assert _exit_code(survivor, workers) == 0

    dead = _job(sessions, doomed)
    assert dead.status == "failed"
    assert dead.error is not None and dead.error.startswith("worker victim stopped heartbeating (lease expired at ")
    with sessions() as session:
        history = jobs.episode_history(session, doomed)
    assert len(history) == recorded_before_kill == dead.episodes_done
    assert [row.episode for row in history] == list(range(len(history)))
    assert _job(sessions, following).worker_id == "survivor"


def test_sigterm_mid_job_releases_it_and_exits_zero(sessions: sessionmaker[Session], workers: WorkerProcesses) -> None:
    job_id = _enqueue(sessions, LONG)
    proc = workers.start("--worker-id=terminated")
    _wait_for(lambda: _job(sessions, job_id).episodes_done >= 1, "the job to record an episode", workers)
    proc.send_signal(signal.SIGTERM)
    assert _exit_code(proc, workers) == 0, workers.logs()
    job = _job(sessions, job_id)
    assert (job.status, job.error) == ("failed", "worker shutting down")
    assert 1 <= job.episodes_done < 5000
    with sessions() as session:
        assert len(jobs.episode_history(session, job_id)) == job.episodes_done


def test_cancel_running_and_queued_jobs(sessions: sessionmaker[Session], workers: WorkerProcesses) -> None:
    running = _enqueue(sessions, LONG)
    queued = _enqueue(sessions, TINY)
    with sessions() as session:
        assert jobs.request_cancel(session, queued).status == "cancelled"
        session.commit()
    proc = workers.start("--worker-id=canceller", "--max-jobs=1")
    _wait_for(lambda: _job(sessions, running).episodes_done >= 1, "the job to record an episode", workers)
    with sessions() as session:
        jobs.request_cancel(session, running)
        session.commit()
    assert _exit_code(proc, workers) == 0, workers.logs()  # --max-jobs=1: exits once the job ended
    job = _job(sessions, running)
    assert job.status == "cancelled" and job.policy_id is None and job.episodes_done < 5000
    assert _job(sessions, queued).status == "cancelled" and _job(sessions, queued).attempts == 0
