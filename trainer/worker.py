"""The job worker (`python -m trainer worker`): claims queued training jobs from the database and runs them.

One job at a time per process. Every episode's reward is written as it happens (which also renews the lease
and tells the worker whether cancellation was requested); a background thread heartbeats too, so a long
episode never loses the lease. Jobs whose worker died are found by their expired lease, by any worker or API
process (`store.jobs.expire_stale_leases`).

SIGTERM / SIGINT: the current episode finishes, the job is released with the reason "worker shutting down"
(`failed`, or requeued when the job has attempts left, see `store.jobs.release_job`), and the process exits 0.
A database that is unreachable is retried with exponential backoff, never crash-looped.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from models.errors import one_line
from models.training_config import TrainingConfig, describe_errors, make_config
from models.weights import WeightsFormatError
from store import jobs
from store.db import create_db_engine, default_database_url, make_session_factory, migrate
from store.policies import get_serving_state
from trainer.backoff import DB_UNAVAILABLE, Backoff
from trainer.heartbeat import Heartbeat
from trainer.job_tracking import JobTracking
from trainer.records import EpisodeRecord, EvaluationRecord, ProgressCallback, TrainingResult

logger = logging.getLogger(__name__)

T = TypeVar("T")
SHUTDOWN_REASON = "worker shutting down"


TrainFunction = Callable[[TrainingConfig, ProgressCallback], TrainingResult]


@dataclass(frozen=True)
class WorkerOptions:
    """What one worker process does; built from the command line by `parse_args`."""

    database_url: str
    worker_id: str
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    once: bool = False
    max_jobs: int | None = None
    train_function: str | None = None
    ray: bool = False  # run each claimed job as a Ray task (trainer.ray_jobs) instead of in this process
    ray_address: str | None = None  # the cluster for `ray`; None starts a local Ray


class _StopTrainingError(Exception):
    """Raised out of the training loop when the job can no longer be written (lease lost, shutting down)."""


class Worker:
    """Claims and runs jobs until stopped. `train` is injectable for tests."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        train: TrainFunction | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        self._train = train
        self._sessions: sessionmaker[Session] | None = None

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        """Migrate, then claim and run jobs until stopped, `--once` or `--max-jobs`. Returns the exit code."""
        logger.info("worker %s starting", self.options.worker_id)
        # Import the trainer (torch) before claiming anything, so a job's lease does not pay for it.
        self._train_function()
        if not self._wait_for_database():
            return 0
        done = 0
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                expired = self._session_call(jobs.expire_stale_leases)
                if expired:
                    logger.warning("failed or requeued jobs %s: their workers' leases expired", expired)
                job = self._session_call(
                    lambda s: jobs.claim_next_job(
                        s, worker_id=self.options.worker_id, lease_seconds=self.options.lease_seconds
                    )
                )
            except DB_UNAVAILABLE as exc:
                delay = backoff.next_delay()
                logger.warning("database unavailable (%s); retrying in %.1f s", one_line(exc), delay)
                self.stop.wait(delay)
                continue
            backoff.reset()
            if job is None:
                if self.options.once:
                    break
                self.stop.wait(self.options.poll_interval)
                continue
            if self.options.ray:
                from trainer.ray_jobs import run_on_ray

                run_on_ray(self.options, job.id, dict(job.config), stop=self.stop)
            else:
                self._run_job(job.id, dict(job.config))
            done += 1
            if self.options.once or (self.options.max_jobs is not None and done >= self.options.max_jobs):
                break
        logger.info("worker %s stopped after %d job(s)", self.options.worker_id, done)
        return 0

    def _wait_for_database(self) -> bool:
        """Run the migrations (safe to race other processes), retrying while the database is unreachable."""
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                migrate(self.options.database_url)
                self._sessions = make_session_factory(create_db_engine(self.options.database_url))
                return True
            except DB_UNAVAILABLE as exc:
                delay = backoff.next_delay()
                logger.warning("database unavailable at start (%s); retrying in %.1f s", one_line(exc), delay)
                self.stop.wait(delay)
        return False

    # --- one job ----------------------------------------------------------------------------------------

    def run_claimed_job(self, job_id: int, config_dict: dict[str, Any]) -> None:
        """Run a job this worker id already holds, claimed by another process (a `--ray` worker's Ray task)."""
        self._sessions = make_session_factory(create_db_engine(self.options.database_url))
        self._run_job(job_id, config_dict)

    def _run_job(self, job_id: int, config_dict: dict[str, Any]) -> None:
        worker_id = self.options.worker_id
        logger.info("job %d: claimed, config %s", job_id, config_dict)
        heartbeat = Heartbeat(self._session_call, job_id, worker_id=worker_id, lease_seconds=self.options.lease_seconds)
        heartbeat.start()
        outcome = "finished"
        tracking: JobTracking | None = None

        def on_progress(episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> bool:
            nonlocal outcome
            cancel = self._retrying(
                f"job {job_id}: recording episode {episode.episode}",
                lambda s: jobs.record_episode(
                    s,
                    job_id,
                    worker_id=worker_id,
                    lease_seconds=self.options.lease_seconds,
                    episode=int(episode.episode),
                    episode_return=float(episode.episode_return),
                    avg_return_10=float(episode.avg_return_10),
                    env_steps=int(episode.env_steps),
                    wall_time=float(episode.wall_time),
                ),
            )
            if evaluation is not None:
                self._retrying(
                    f"job {job_id}: recording evaluation after episode {evaluation.episode}",
                    lambda s: jobs.record_evaluation(
                        s,
                        job_id,
                        worker_id=worker_id,
                        episode=int(evaluation.episode),
                        env_steps=int(evaluation.env_steps),
                        mean_return=float(evaluation.mean_return),
                        std_return=float(evaluation.std_return),
                        wall_time=float(evaluation.wall_time),
                    ),
                )
            if tracking is not None:
                tracking.progress(episode, evaluation)
            if heartbeat.lease_lost.is_set():
                raise jobs.LeaseLostError(f"job {job_id}: lease lost while heartbeating")
            if cancel or heartbeat.cancel_requested.is_set():
                outcome = "cancelled"
                return False
            if self.stop.is_set():
                outcome = "shutdown"
                return False
            return True

        try:
            try:
                config = self._config_from(config_dict)
                self._retrying(
                    f"job {job_id}: setting episodes_total",
                    lambda s: jobs.set_episodes_total(s, job_id, worker_id=worker_id, episodes_total=config.episodes),
                )
                tracking = self._start_tracking(job_id, config)
                result = self._train_function()(config, on_progress)
            except (jobs.LeaseLostError, _StopTrainingError):
                raise
            except Exception as exc:
                # The full traceback goes to the log; the job row gets one line a user can act on.
                logger.exception("job %d: training failed", job_id)
                error = one_line(exc)  # bound now: `exc` is unset once the except block ends
                if tracking is not None:
                    tracking.ended("failed")
                self._finish(job_id, "failed", lambda s: jobs.fail_job(s, job_id, worker_id=worker_id, error=error))
                return
            if tracking is not None and outcome != "finished":
                tracking.ended("cancelled" if outcome == "cancelled" else "failed")
            if outcome == "cancelled":
                self._finish(job_id, "cancelled", lambda s: jobs.cancel_running_job(s, job_id, worker_id=worker_id))
            elif outcome == "shutdown":
                self._finish(
                    job_id,
                    "released",
                    lambda s: jobs.release_job(s, job_id, worker_id=worker_id, reason=SHUTDOWN_REASON),
                )
            else:
                promoted = self._complete(job_id, result.actor_bytes)
                if tracking is not None:
                    tracking.succeeded(result, config.to_dict(), promoted=promoted)
                    self._record_tracking(job_id, tracking)
        except jobs.LeaseLostError as exc:
            logger.warning("job %d: abandoned, %s", job_id, exc)
        except _StopTrainingError as exc:
            logger.warning("job %d: abandoned (%s); its lease will expire", job_id, exc)
        finally:
            heartbeat.stop()

    def _start_tracking(self, job_id: int, config: TrainingConfig) -> JobTracking | None:
        """The job's MLflow run when MLFLOW_TRACKING_URI is set; its id (or why there is none) goes on the job."""
        tracking = JobTracking(job_id)
        if not tracking.enabled:
            return None
        tracking.start(config.to_dict())
        self._record_tracking(job_id, tracking)
        return tracking

    def _record_tracking(self, job_id: int, tracking: JobTracking) -> None:
        run_id, error, worker_id = tracking.run_id, tracking.error, self.options.worker_id
        self._retrying(
            f"job {job_id}: recording its tracker run",
            lambda s: jobs.record_tracking(s, job_id, worker_id=worker_id, run_id=run_id, error=error),
        )

    def _complete(self, job_id: int, actor_bytes: bytes) -> bool:
        """Store the policy and mark the job succeeded; whether the policy now serves (its promotion rule)."""
        worker_id = self.options.worker_id
        try:
            job = self._retrying(
                f"job {job_id}: storing the policy",
                lambda s: jobs.complete_job(s, job_id, worker_id=worker_id, weights=actor_bytes),
            )
        except WeightsFormatError as exc:
            logger.error("job %d: the trainer exported an invalid actor: %s", job_id, exc)
            error = f"invalid exported actor: {exc}"
            self._finish(job_id, "failed", lambda s: jobs.fail_job(s, job_id, worker_id=worker_id, error=error))
            return False
        logger.info("job %d: succeeded, policy %s", job_id, job.policy_id)
        serving_id, _ = self._retrying(f"job {job_id}: reading the serving policy", get_serving_state)
        return job.policy_id is not None and serving_id == job.policy_id

    def _finish(self, job_id: int, what: str, write: Callable[[Session], object]) -> None:
        self._retrying(f"job {job_id}: marking it {what}", write)
        logger.info("job %d: %s", job_id, what)

    @staticmethod
    def _config_from(config_dict: dict[str, Any]) -> TrainingConfig:
        """The job's stored preset and overrides, validated by the one config model (the API already did)."""
        overrides = dict(config_dict)
        preset = overrides.pop("preset", "default")
        try:
            return make_config(str(preset), **overrides)
        except ValidationError as exc:
            raise ValueError(f"invalid config: {describe_errors(exc)}") from None

    def _train_function(self) -> TrainFunction:
        if self._train is None:
            self._train = load_train_function(self.options.train_function)
        return self._train

    # --- database access --------------------------------------------------------------------------------

    def _session_call(self, work: Callable[[Session], T]) -> T:
        if self._sessions is None:
            raise RuntimeError("worker database is not initialised; call run()")
        with self._sessions() as session:
            return work(session)

    def _retrying(self, what: str, work: Callable[[Session], T]) -> T:
        """Run a write, waiting out database outages with backoff; give up only when asked to stop."""
        backoff = Backoff()
        while True:
            try:
                return self._session_call(work)
            except DB_UNAVAILABLE as exc:
                if self.stop.is_set():
                    raise _StopTrainingError(f"database unavailable while shutting down: {one_line(exc)}") from exc
                delay = backoff.next_delay()
                logger.warning("%s: database unavailable (%s); retrying in %.1f s", what, one_line(exc), delay)
                self.stop.wait(delay)


def load_train_function(dotted: str | None) -> TrainFunction:
    """`trainer.training.train` (torch limited to one thread), or the `module:function` given instead."""
    if dotted:
        module_name, _, attribute = dotted.partition(":")
        function: TrainFunction = getattr(importlib.import_module(module_name), attribute)
        return function
    import torch

    # Several workers (and the API) share the machine's cores; one thread each avoids oversubscription.
    torch.set_num_threads(1)
    from trainer.training import train

    real_train: TrainFunction = train
    return real_train


def default_worker_id() -> str:
    """host-pid-random: unique across machines, restarts and PID reuse."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def parse_args(argv: list[str] | None = None) -> WorkerOptions:
    """Command-line flags, with defaults from DATABASE_URL and DATA_DIR."""
    parser = argparse.ArgumentParser(prog="python -m trainer worker", description="Run queued training jobs.")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or default_database_url(Path(os.environ.get("DATA_DIR") or "data")),
        help="SQLAlchemy URL (default: $DATABASE_URL, else sqlite under $DATA_DIR or ./data)",
    )
    parser.add_argument("--worker-id", default=None, help="name in the jobs table (default: host-pid-random)")
    parser.add_argument("--lease-seconds", type=_positive_float, default=30.0, help="job lease length (default 30)")
    parser.add_argument(
        "--poll-interval", type=_positive_float, default=1.0, help="seconds between polls of an empty queue"
    )
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--max-jobs", type=_positive_int, default=None, help="exit after this many jobs")
    parser.add_argument(
        "--train-function",
        default=None,
        help="module:function to train with instead of trainer.training.train (tests use a fake)",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="run each claimed job as a Ray task, on the cluster at --ray-address (else a local Ray)",
    )
    parser.add_argument(
        "--ray-address", default=os.environ.get("RAY_ADDRESS") or None, help="the Ray cluster (default: $RAY_ADDRESS)"
    )
    args = parser.parse_args(argv)
    return WorkerOptions(
        database_url=args.database_url,
        worker_id=args.worker_id or default_worker_id(),
        lease_seconds=args.lease_seconds,
        poll_interval=args.poll_interval,
        once=args.once,
        max_jobs=args.max_jobs,
        train_function=args.train_function,
        ray=args.ray,
        ray_address=args.ray_address,
    )


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the worker to stop after the current episode."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping after the current episode", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m trainer worker`."""
    options = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("LOG_LEVEL", "INFO"),
            format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
        )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise here
    stop = threading.Event()
    install_signal_handlers(stop)
    return Worker(options, stop=stop).run()


if __name__ == "__main__":
    sys.exit(main())
