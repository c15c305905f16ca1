"""Sweeps on a real two-node Ray cluster (one machine, one CPU per node), driven by real sweep runner processes.

Trials train the real DDPG on tiny configs. Nothing here is timed: deadlines only stop a broken build from hanging.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import jobs, sweeps
from store.registry import champion_of
from store.tables.registry import Policy
from store.tables.work_queues import Job, Sweep, SweepTrial
from tests.processes import start_process
from tests.trainer.sweeps.conftest import ROOT, RunnerFactory, runner_logs, wait_for
from tests.trainer.sweeps.ray_cluster import RayCluster

pytestmark = pytest.mark.slow

TINY = {
    "preset": "default",
    "episodes": 3,
    "max_episode_steps": 50,
    "eval_every": 1,
    "eval_episodes": 1,
    "hidden_size": 16,
    "batch_size": 32,
    "learning_starts": 32,
    "random_steps": 32,
}


def _enqueue(sessions: sessionmaker[Session], *, base: dict[str, Any], trials: int, **options: Any) -> int:
    with sessions() as session:
        sweep = sweeps.enqueue_sweep(
            session,
            model="pendulum",
            base=base,
            space={"seed": {"randint": [0, 10000]}, "actor_lr": {"loguniform": [3e-4, 3e-3]}},
            trials=trials,
            max_concurrent=options.pop("max_concurrent", 2),
            search=options.pop("search", "random"),
            early_stop=options.pop("early_stop", None),
            promote="if_better",
            max_failures=options.pop("max_failures", 1),
            max_queued=10,
        )
        return sweep.id


def _sweep(sessions: sessionmaker[Session], sweep_id: int) -> Sweep:
    with sessions() as session:
        found = session.get(Sweep, sweep_id)
        assert found is not None
        return found


def _trials(sessions: sessionmaker[Session], sweep_id: int) -> list[tuple[SweepTrial, Job]]:
    with sessions() as session:
        return sweeps.trials_of(session, sweep_id)


def _ended(sessions: sessionmaker[Session], sweep_id: int) -> Sweep | None:
    sweep = _sweep(sessions, sweep_id)
    return sweep if sweep.status in ("succeeded", "failed", "cancelled") else None


def _diagnostics(cluster: RayCluster, tmp_path: Path, sessions: sessionmaker[Session], sweep_id: int) -> Any:
    def show() -> str:
        trials = _trials(sessions, sweep_id)
        rows = [(job.id, job.status, job.episodes_done, trial.node, job.error) for trial, job in trials]
        return f"trials {rows}\n{runner_logs(tmp_path)}\n{cluster.logs()}"

    return show


def test_a_sweeps_trials_run_on_both_nodes_and_the_best_is_promoted(
    two_nodes: RayCluster, sweep_sessions: sessionmaker[Session], start_runner: RunnerFactory, tmp_path: Path
) -> None:
    sweep_id = _enqueue(sweep_sessions, base=TINY, trials=4, max_concurrent=2)
    # Two runners race for the one sweep: exactly one runs it, the other finds the queue empty and exits.
    runners = [start_runner(), start_runner()]
    show = _diagnostics(two_nodes, tmp_path, sweep_sessions, sweep_id)
    done = wait_for(lambda: _ended(sweep_sessions, sweep_id), "the sweep to end", show)
    assert done.status == "succeeded", show()
    for runner in runners:
        runner.wait(60)
    logs = [path.read_text() for path in sorted(tmp_path.glob("runner-*.log"))]
    assert sum(f"sweep {sweep_id}: succeeded" in log for log in logs) == 1, show()
    assert done.runner_id is not None and sum(done.runner_id in log for log in logs) == 1

    trials = _trials(sweep_sessions, sweep_id)
    assert len(trials) == 4 and all(job.status == "succeeded" for _, job in trials), show()
    nodes = {trial.node for trial, _ in trials}
    assert nodes == {str(node["NodeID"]) for node in two_nodes.alive_nodes()}, show()
    _, best_job = max(trials, key=lambda pair: pair[0].heldout_return or float("-inf"))
    assert (done.best_job_id, done.policy_id) == (best_job.id, best_job.policy_id)
    with sweep_sessions() as session:
        policy = session.get(Policy, done.policy_id)
        assert policy is not None and policy.model_id is not None
        assert champion_of(session, policy.model_id) == done.policy_id  # if_better, and no champion before
    for trial, job in trials:
        assert trial.heldout_return is not None and job.episodes_done == TINY["episodes"] and job.policy_id is not None
        assert job.config == {**TINY, **trial.params}


def test_cancel_mid_sweep_ends_every_trial_within_one_episode(
    two_nodes: RayCluster, sweep_sessions: sessionmaker[Session], start_runner: RunnerFactory, tmp_path: Path
) -> None:
    sweep_id = _enqueue(sweep_sessions, base={**TINY, "episodes": 1000, "eval_every": 0}, trials=4, max_concurrent=2)
    runner = start_runner()
    show = _diagnostics(two_nodes, tmp_path, sweep_sessions, sweep_id)

    def two_training() -> list[tuple[SweepTrial, Job]] | None:
        trials = _trials(sweep_sessions, sweep_id)
        return trials if sum(job.status == "running" and job.episodes_done >= 1 for _, job in trials) == 2 else None

    wait_for(two_training, "two trials training", show)
    with sweep_sessions() as session:
        sweeps.request_cancel_sweep(session, sweep_id)
        session.commit()
    at_cancel = {job.id: job.episodes_done for _, job in _trials(sweep_sessions, sweep_id)}
    done = wait_for(lambda: _ended(sweep_sessions, sweep_id), "the sweep to end", show)
    assert done.status == "cancelled", show()
    assert runner.wait(60) == 0
    trials = _trials(sweep_sessions, sweep_id)
    assert {job.id for _, job in trials} == set(at_cancel)  # no trial started after the cancel
    for _, job in trials:
        assert job.status == "cancelled", show()
        assert job.episodes_done <= at_cancel[job.id] + 1, show()


def test_the_plain_worker_runs_a_job_as_a_ray_task_on_the_cluster(
    two_nodes: RayCluster, sweep_database: str, sweep_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sweep_sessions() as session:
        job_id = jobs.enqueue_job(session, config=TINY, promote="never", max_queued=10).id
    log = tmp_path / "worker.log"
    env = {**two_nodes.env, "DATABASE_URL": sweep_database, "RAY_ADDRESS": two_nodes.address}
    with log.open("wb") as out:
        # Forked from the preloaded Python, as the sweep runners are (tests/processes.py): the worker is the same
        # process, without importing PyTorch and the rest again.
        worker = start_process(
            [sys.executable, "-m", "trainer", "worker", "--ray", "--once", "--poll-interval=0.2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        returncode = worker.wait(240)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log.read_text(errors="replace")
    assert returncode == 0, text
    with sweep_sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded" and job.policy_id is not None, text
        assert job.episodes_done == TINY["episodes"]
    nodes = {str(node["NodeID"]) for node in two_nodes.alive_nodes()}
    assert any(f"job {job_id}: ran on Ray node {node}" in text for node in nodes), text


def test_asha_stops_poor_trials_at_their_evaluations_and_the_sweep_ends_with_a_best_policy(
    two_nodes: RayCluster, sweep_sessions: sessionmaker[Session], start_runner: RunnerFactory, tmp_path: Path
) -> None:
    base = {**TINY, "episodes": 8, "eval_every": 1}
    sweep_id = _enqueue(sweep_sessions, base=base, trials=8, max_concurrent=2, search="tpe", early_stop="asha")
    start_runner()
    show = _diagnostics(two_nodes, tmp_path, sweep_sessions, sweep_id)
    done = wait_for(lambda: _ended(sweep_sessions, sweep_id), "the sweep to end", show)
    assert done.status == "succeeded" and done.policy_id is not None, show()
    trials = _trials(sweep_sessions, sweep_id)
    assert len(trials) == 8, show()
    stopped = [job for _, job in trials if job.status == "cancelled"]
    finished = [job for _, job in trials if job.status == "succeeded"]
    assert stopped and finished and len(stopped) + len(finished) == 8, show()
    for job in stopped:
        assert job.error is not None and job.error.startswith("stopped early by ASHA after episode"), show()
        assert job.episodes_done < base["episodes"]
    assert done.best_job_id in {job.id for job in finished}


# Last in the module: a test after it would start the killed node again first (two_nodes), about 4 CPU s.
def test_a_worker_node_killed_mid_sweep_has_its_trial_retried_and_the_sweep_still_ends_with_a_best_policy(
    two_nodes: RayCluster, sweep_sessions: sessionmaker[Session], start_runner: RunnerFactory, tmp_path: Path
) -> None:
    worker = two_nodes.workers[-1]
    worker_node = two_nodes.node_id(worker)
    # Long enough that the worker's trial is still training when its node dies. Three trials, though two would be
    # enough for the kill: when the head's first trial ends the third is waiting, so Tune keeps that trial's process
    # for it (reuse_actors) and then for the retry. With two, nothing waits at that moment, the process is stopped,
    # and the retry starts a new one (measured: 10 Ray worker processes for this module instead of 9, 3.7 CPU s more).
    sweep_id = _enqueue(sweep_sessions, base={**TINY, "episodes": 30}, trials=3, max_concurrent=2, max_failures=1)
    start_runner()
    show = _diagnostics(two_nodes, tmp_path, sweep_sessions, sweep_id)

    def training_on_the_worker() -> Job | None:
        running = [job for trial, job in _trials(sweep_sessions, sweep_id) if trial.node == worker_node]
        return next((job for job in running if job.status == "running" and job.episodes_done >= 2), None)

    victim = wait_for(training_on_the_worker, "a trial training on the worker node", show)
    two_nodes.kill_node(worker)
    done = wait_for(lambda: _ended(sweep_sessions, sweep_id), "the sweep to end", show)

    assert done.status == "succeeded" and done.policy_id is not None, show()
    by_id = {job.id: (trial, job) for trial, job in _trials(sweep_sessions, sweep_id)}
    assert all(job.status in ("succeeded", "failed") for _, job in by_id.values()), show()  # nothing left running
    trial, retried = by_id[victim.id]
    assert retried.attempts == 2 and retried.status == "succeeded", show()
    assert retried.error is not None and "attempt 1 ended" in retried.error and "retrying" in retried.error
    assert trial.node != worker_node  # the retry ran on the surviving node
    assert retried.episodes_done == 30  # the history is the successful attempt's, from its first episode
