"""The one-command run's helpers: the bootstrap job and the embedded trainer worker subprocess."""

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
    env = dict(os.environ, DATABASE_URL=database_url)
    # Own process group: Ctrl-C reaches only us, and we stop the worker ourselves, after the API.
    # preexec_fn is safe here: `python -m app` calls this before uvicorn or any other thread starts.
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "worker"],
        env=env,
        process_group=0,
        preexec_fn=_prepare_worker_process,  # noqa: PLW1509
    )
    logger.info("started embedded trainer worker (pid %s)", process.pid)
    threading.Thread(target=_report_exit, args=(process,), name="worker-watch", daemon=True).start()
    return process


def _report_exit(process: subprocess.Popen[bytes]) -> None:
    # Say so when the worker dies on its own: queued jobs would otherwise wait silently.
    code = process.wait()
    if code not in (0, -signal.SIGTERM):
        logger.error("embedded trainer worker exited with code %s; jobs will stay queued", code)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait for the worker to release its job and exit, SIGKILL as a last resort."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(WORKER_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        logger.warning("trainer worker did not stop within %.0f s; killing it", WORKER_STOP_TIMEOUT_SECONDS)
        process.kill()
        process.wait()
    logger.info("trainer worker stopped (exit code %s)", process.returncode)
