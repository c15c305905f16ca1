"""The one-command run's helpers: the bootstrap job, the embedded trainer worker and sweep runner subprocesses."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading

from sqlalchemy.orm import Session, sessionmaker

from store.jobs import QueueFullError, count_jobs_by_status, enqueue_job, lock_queue
from store.policies import list_policies

logger = logging.getLogger(__name__)

# The worker finishes its current episode on SIGTERM (a second or so); after this it is killed.
WORKER_STOP_TIMEOUT_SECONDS = 30.0
# The embedded worker shares the machine with the API and must not show up in /act's tail latency. On Linux it
# runs as SCHED_IDLE: it gets the CPU nobody else wants (all of it without traffic), and a waking API process
# preempts it at once. Measured (bench/serve_bench.py, 1 worker, 16 connections): /act p99 while a job trains
# was 2.1-2.5x idle at niceness 10, 1.7x at 19, 1.4x as SCHED_IDLE; the job kept training in all three. Where
# SCHED_IDLE is refused, the lowest priority niceness gives. A docker compose worker has its own container.
WORKER_NICENESS = 19


def queue_bootstrap_job(
    sessions: sessionmaker[Session], *, preset: str, episodes: int | None, max_queued: int
) -> int | None:
    """Queue one training job when there is no policy and nothing is queued or running; return its id."""
    with sessions() as session:
        # The enqueue lock first: API replicas starting at the same moment must not both see "no policy, no
        # job" and both queue one. The lock lasts until enqueue_job commits (or the session ends).
        lock_queue(session)
        _, policies = list_policies(session, limit=1)
        if policies:
            return None
        counts = count_jobs_by_status(session)
        if counts["queued"] or counts["running"]:
            logger.info("no policy yet, but a training job is already queued or running")
            return None
        config: dict[str, object] = {"preset": preset}
        if episodes is not None:
            config["episodes"] = episodes
        try:
            job = enqueue_job(session, config=config, promote="if_better", max_queued=max_queued)
        except QueueFullError:
            return None
        logger.info("no policy yet: queued bootstrap training job %s (%s)", job.id, config)
        return job.id


def trainer_available() -> bool:
    """Whether this environment can run the trainer (the API image has no torch, on purpose)."""
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("gymnasium") is not None


def _prepare_worker_process() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused by a sandbox
        os.nice(WORKER_NICENESS)
    # Linux: if the API process is killed hard (SIGKILL), the kernel sends the worker SIGTERM, so it releases
    # its job instead of training on as an orphan.
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_worker(database_url: str) -> subprocess.Popen[bytes]:
    """`python -m trainer worker` against the same database; the URL goes by environment, not argv (ps)."""
    return _start_child(["worker"], database_url, "trainer worker", "jobs will stay queued")


def sweep_runner_available() -> bool:
    """Whether the sweep runner can run here: the trainer plus Ray Tune and Optuna (the `trainer` extra)."""
    return trainer_available() and all(importlib.util.find_spec(name) is not None for name in ("ray", "optuna"))


def start_sweep_runner(database_url: str) -> subprocess.Popen[bytes]:
    """`python -m trainer sweeps` against the same database: it starts a local Ray when a sweep arrives (or uses
    RAY_ADDRESS's cluster), at the same idle priority as the worker, which its Ray processes inherit."""
    return _start_child(["sweeps"], database_url, "sweep runner", "sweeps will stay queued")


def _start_child(command: list[str], database_url: str, name: str, consequence: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=database_url)
    # Own process group: Ctrl-C reaches only us, and we stop the child ourselves, after the API.
    # preexec_fn is safe here: `python -m app` calls this before uvicorn or any other thread starts.
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", *command],
        env=env,
        process_group=0,
        preexec_fn=_prepare_worker_process,  # noqa: PLW1509
    )
    logger.info("started embedded %s (pid %s)", name, process.pid)
    threading.Thread(
        target=_report_exit, args=(process, name, consequence), name=f"{command[0]}-watch", daemon=True
    ).start()
    return process


def _report_exit(process: subprocess.Popen[bytes], name: str, consequence: str) -> None:
    # Say so when the child dies on its own: queued work would otherwise wait silently.
    code = process.wait()
    if code not in (0, -signal.SIGTERM):
        logger.error("embedded %s exited with code %s; %s", name, code, consequence)


def stop_worker(process: subprocess.Popen[bytes], name: str = "trainer worker") -> None:
    """SIGTERM, wait for the child to end its work (the worker releases its job) and exit, SIGKILL as a last resort."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(WORKER_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0f s; killing it", name, WORKER_STOP_TIMEOUT_SECONDS)
        process.kill()
        process.wait()
    logger.info("%s stopped (exit code %s)", name, process.returncode)
