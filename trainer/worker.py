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

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from models.errors import one_line
from models.training_config import TrainingConfig, load_job_config
from models.weights import WeightsFormatError
from store import jobs
from store.landed_writes import job_ended_landed
from store.policies import champion_model_name
from store.tables.work_queues import Job
from trainer.claim_loop import Database, DatabaseGoneError, claim_loop, wait_for_database
from trainer.job_recorder import JobRecorder
from trainer.job_tracking import JobTracking
from trainer.records import ProgressCallback, TrainingResult
from trainer.settings import (
    WorkerSettings,
    claimer_parser,
    default_holder_id,
    parse_flags,
    positive_int,
    start_process,
)

logger = logging.getLogger(__name__)

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
    # DEFAULT_MODEL and MLFLOW_*: which MLflow registered model a promoted job's alias moves on.
    settings: WorkerSettings = field(default_factory=WorkerSettings)


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
        self._database: Database | None = None

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        """Migrate, then claim and run jobs until stopped, `--once` or `--max-jobs`. Returns the exit code."""
        logger.info("worker %s starting", self.options.worker_id)
        # Import the trainer (torch) before claiming anything, so a job's lease does not pay for it.
        self._train_function()
        self._database = wait_for_database(self.options.database_url, self.stop)
        if self._database is None:
            return 0
        done = claim_loop(
            self._claim,
            self._run_claimed,
            stop=self.stop,
            poll_interval=self.options.poll_interval,
            once=self.options.once,
            max_runs=self.options.max_jobs,
        )
        logger.info("worker %s stopped after %d job(s)", self.options.worker_id, done)
        return 0

    def _claim(self) -> Job | None:
        expired = self._db.call(jobs.expire_stale_leases)
        if expired:
            logger.warning("failed or requeued jobs %s: their workers' leases expired", expired)
        options = self.options
        return self._db.call(
            lambda s: jobs.claim_next_job(s, worker_id=options.worker_id, lease_seconds=options.lease_seconds)
        )

    def _run_claimed(self, job: Job) -> None:
        if self.options.ray:
            from trainer.ray_jobs import run_on_ray

            run_on_ray(self.options, job.id, dict(job.config), stop=self.stop)
        else:
            self._run_job(job.id, dict(job.config))

    # --- one job ----------------------------------------------------------------------------------------

    def run_claimed_job(self, job_id: int, config_dict: dict[str, Any]) -> None:
        """Run a job this worker id already holds, claimed by another process (a `--ray` worker's Ray task)."""
        self._database = Database.connect(self.options.database_url, self.stop)
        self._run_job(job_id, config_dict)

    def _run_job(self, job_id: int, config_dict: dict[str, Any]) -> None:
        worker_id = self.options.worker_id
        logger.info("job %d: claimed, config %s", job_id, config_dict)
        recorder = JobRecorder(
            self._db, job_id, worker_id=worker_id, lease_seconds=self.options.lease_seconds, stop=self.stop
        )
        tracking: JobTracking | None = None
        with recorder:
            try:
                try:
                    config = load_job_config(config_dict)
                    recorder.set_episodes_total(config.episodes)
                    tracking = self._start_tracking(job_id, config)
                    if tracking is not None:
                        recorder.on_progress = tracking.progress
                    result = self._train_function()(config, recorder)
                except (jobs.LeaseLostError, DatabaseGoneError):
                    raise
                except Exception as exc:
                    # The full traceback goes to the log; the job row gets one line a user can act on.
                    logger.exception("job %d: training failed", job_id)
                    error = one_line(exc)  # bound now: `exc` is unset once the except block ends
                    recorder.ending()
                    if tracking is not None:
                        tracking.ended("failed")
                    self._finish(job_id, "failed", lambda s: jobs.fail_job(s, job_id, worker_id=worker_id, error=error))
                    return
                self._conclude(job_id, recorder, tracking, config, result)
            except jobs.LeaseLostError as exc:
                logger.warning("job %d: abandoned, %s", job_id, exc)
            except DatabaseGoneError as exc:
                logger.warning("job %d: abandoned (%s); its lease will expire", job_id, exc)

    def _conclude(
        self,
        job_id: int,
        recorder: JobRecorder,
        tracking: JobTracking | None,
        config: TrainingConfig,
        result: TrainingResult,
    ) -> None:
        """Write how training ended: cancelled, released (shutting down), or succeeded with its policy."""
        worker_id, outcome = self.options.worker_id, recorder.outcome
        # No beat after the write that ends the job: it would find the job ended and log a lost lease.
        recorder.ending()
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
            champion_of = self._complete(job_id, result.actor_bytes)
            if tracking is not None:
                tracking.succeeded(result, config.to_dict(), champion_of=champion_of)
                self._record_tracking(job_id, tracking)

    def _start_tracking(self, job_id: int, config: TrainingConfig) -> JobTracking | None:
        """The job's MLflow run when MLFLOW_TRACKING_URI is set; its id (or why there is none) goes on the job."""
        tracking = JobTracking(job_id, self.options.settings)
        if not tracking.enabled:
            return None
        tracking.start(config.to_dict())
        self._record_tracking(job_id, tracking)
        return tracking

    def _record_tracking(self, job_id: int, tracking: JobTracking) -> None:
        run_id, error, worker_id = tracking.run_id, tracking.error, self.options.worker_id
        self._db.retrying(
            f"job {job_id}: recording its tracker run",
            lambda s: jobs.record_tracking(s, job_id, worker_id=worker_id, run_id=run_id, error=error),
        )

    def _complete(self, job_id: int, actor_bytes: bytes) -> str | None:
        """Store the policy and mark the job succeeded; the model whose champion the policy now is (its promotion
        rule said so), or None."""
        worker_id, default_model = self.options.worker_id, self.options.settings.default_model
        try:
            job = self._db.retrying(
                f"job {job_id}: storing the policy",
                lambda s: jobs.complete_job(
                    s, job_id, worker_id=worker_id, weights=actor_bytes, default_model=default_model
                ),
                landed=lambda s: job_ended_landed(s, job_id, worker_id=worker_id, status="succeeded"),
            )
        except WeightsFormatError as exc:
            logger.error("job %d: the trainer exported an invalid actor: %s", job_id, exc)
            error = f"invalid exported actor: {exc}"
            self._finish(job_id, "failed", lambda s: jobs.fail_job(s, job_id, worker_id=worker_id, error=error))
            return None
        logger.info("job %d: succeeded, policy %s", job_id, job.policy_id)
        policy_id = job.policy_id
        if policy_id is None:
            return None
        return self._db.retrying(
            f"job {job_id}: reading its model's champion", lambda s: champion_model_name(s, policy_id)
        )

    def _finish(self, job_id: int, what: str, write: Callable[[Session], object]) -> None:
        self._db.retrying(f"job {job_id}: marking it {what}", write)
        logger.info("job %d: %s", job_id, what)

    def _train_function(self) -> TrainFunction:
        if self._train is None:
            self._train = load_train_function(self.options.train_function)
        return self._train

    @property
    def _db(self) -> Database:
        if self._database is None:
            raise RuntimeError("worker database is not initialised; call run()")
        return self._database


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


def parse_args(argv: list[str] | None = None) -> WorkerOptions:
    """Command-line flags, with defaults from the worker's settings (DATABASE_URL, DATA_DIR, RAY_ADDRESS)."""
    settings, parser = claimer_parser(WorkerSettings, "worker", "Run queued training jobs.", holder="worker", row="job")
    parser.add_argument("--max-jobs", type=positive_int, default=None, help="exit after this many jobs")
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
    settings, args, shared = parse_flags(settings, parser, argv)
    worker_id = args.worker_id or default_holder_id()
    return WorkerOptions(worker_id=worker_id, max_jobs=args.max_jobs, train_function=args.train_function, ray=args.ray,
                         settings=settings, **shared)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m trainer worker`."""
    options = parse_args(argv)
    stop = start_process(options.settings, "stopping after the current episode")
    return Worker(options, stop=stop).run()


if __name__ == "__main__":
    sys.exit(main())
