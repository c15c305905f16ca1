"""The sweep runner (`python -m trainer sweeps`): claims queued sweeps from the database and runs each on Ray Tune.

Ray is the cluster named by RAY_ADDRESS (or --ray-address), or a local Ray this process starts for a sweep, bound to
127.0.0.1 and shut down after RAY_IDLE_SHUTDOWN_SECONDS without one (trainer.sweeps.ray_connection). One sweep at a
time per runner; a heartbeat thread renews the sweep's lease and notices cancellation, which stops Tune (and every
trial stops within one episode: its job is asked to cancel). Two runners never run the same sweep: claiming is the
leased-work core's (store.leases, through store.sweeps), and every runner write checks the lease.

The database may go away at any moment: every write waits it out with the job worker's backoff (trainer.claim_loop),
so a sweep survives an outage shorter than its lease, and the runner itself never exits for it. SIGTERM / SIGINT
stop Tune, end the running sweep `failed` ("sweep runner shutting down"), shut the local Ray down, and exit 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from models.errors import one_line
from store import jobs, sweeps
from store.landed_writes import sweep_finished_landed
from store.tables.work_queues import Sweep
from trainer.claim_loop import Database, DatabaseGoneError, claim_loop, wait_for_database
from trainer.heartbeat import Heartbeat
from trainer.settings import DEFAULT_RAY_IDLE_SHUTDOWN_SECONDS
from trainer.sweeps.ray_connection import RayConnection

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "sweep runner shutting down"
T = TypeVar("T")


@dataclass(frozen=True)
class RunnerOptions:
    database_url: str
    runner_id: str
    ray_address: str | None = None  # None: start a local Ray
    num_cpus: int | None = None  # of the local Ray (None: all cores)
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    once: bool = False  # run at most one sweep, then exit
    trial_cpus: float = 1.0
    ray_idle_shutdown_seconds: float = DEFAULT_RAY_IDLE_SHUTDOWN_SECONDS  # of a local Ray


class SweepRunner:
    def __init__(self, options: RunnerOptions, *, stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        self._database: Database | None = None
        self._ray = RayConnection(
            options.ray_address, num_cpus=options.num_cpus, idle_shutdown_seconds=options.ray_idle_shutdown_seconds
        )

    def run(self) -> int:
        logger.info("sweep runner %s starting", self.options.runner_id)
        self._database = wait_for_database(self.options.database_url, self.stop)
        if self._database is None:
            return 0
        try:
            claim_loop(
                self._claim,
                self.run_sweep,
                stop=self.stop,
                poll_interval=self.options.poll_interval,
                once=self.options.once,
            )
        finally:
            self._ray.shutdown()
        logger.info("sweep runner %s stopped", self.options.runner_id)
        return 0

    def run_sweep(self, sweep: Sweep) -> None:
        """Drive Tune for one claimed sweep and record how it ended."""
        cancelled = threading.Event()  # cancellation asked or the lease lost: either way Tune must stop
        heartbeat = Heartbeat(
            lambda: self._renew(sweep.id),
            what=f"sweep {sweep.id}",
            lease_seconds=self.options.lease_seconds,
            lease_lost_error=sweeps.SweepLeaseLostError,
            should_stop=cancelled,
        )
        heartbeat.start()
        status, error = "succeeded", None
        try:
            self._ray.connect()
            from trainer.sweeps.tune_run import run_tune  # Ray's first import comes after connect() set it up

            run_tune(sweep, self.options, self._session_call(sweep.id), cancelled=cancelled, stop=self.stop)
            # Tune may finish before the heartbeat thread's next look: trials started after a cancel end at once.
            if not heartbeat.lease_lost.is_set() and self._cancel_requested(sweep.id):
                cancelled.set()
            if cancelled.is_set():
                status = "cancelled"
            elif self.stop.is_set():
                status, error = "failed", SHUTDOWN_REASON
        except Exception as exc:
            logger.exception("sweep %d: Tune failed", sweep.id)
            status, error = "failed", one_line(exc)
        finally:
            heartbeat.stop()
            self._ray.sweep_ended()
        if heartbeat.lease_lost.is_set():
            logger.warning("sweep %d: lease lost; leaving its outcome to whoever holds it", sweep.id)
            return
        self._finish(sweep.id, status, error)

    def _finish(self, sweep_id: int, status: str, error: str | None) -> None:
        runner_id = self.options.runner_id
        try:
            done = self._db.retrying(
                f"sweep {sweep_id}: recording it {status}",
                lambda s: sweeps.finish_sweep(s, sweep_id, runner_id=runner_id, status=status, error=error),
                landed=lambda s: sweep_finished_landed(s, sweep_id, runner_id=runner_id),
            )
        except sweeps.SweepLeaseLostError as exc:
            logger.warning("sweep %d: %s", sweep_id, exc)
            return
        except DatabaseGoneError as exc:
            logger.warning("sweep %d: not recorded %s (%s); its lease will expire", sweep_id, status, exc)
            return
        logger.info("sweep %d: %s, best job %s, policy %s", sweep_id, done.status, done.best_job_id, done.policy_id)

    def _session_call(self, sweep_id: int) -> Callable[[Callable[[Session], T]], T]:
        """How Tune's side of the sweep (its model, the trial callbacks) reaches the database: waiting out outages."""

        def call(work: Callable[[Session], T]) -> T:
            return self._db.retrying(f"sweep {sweep_id}", work)

        return call

    def _claim(self) -> Sweep | None:
        self._expire_stale_leases()
        options = self.options
        claimed = self._db.call(
            lambda s: sweeps.claim_next_sweep(s, runner_id=options.runner_id, lease_seconds=options.lease_seconds)
        )
        if claimed is None:
            self._ray.shutdown_if_idle()
        return claimed

    def _renew(self, sweep_id: int) -> bool:
        """The heartbeat's beat: one try (the heartbeat itself retries at its next beat)."""
        return self._db.call(lambda s: self._renew_in(s, sweep_id))

    def _cancel_requested(self, sweep_id: int) -> bool:
        try:
            return self._db.retrying(f"sweep {sweep_id}: renewing its lease", lambda s: self._renew_in(s, sweep_id))
        except (sweeps.SweepLeaseLostError, DatabaseGoneError):
            return False

    def _renew_in(self, session: Session, sweep_id: int) -> bool:
        options = self.options
        return sweeps.heartbeat_sweep(
            session, sweep_id, runner_id=options.runner_id, lease_seconds=options.lease_seconds
        )

    def _expire_stale_leases(self) -> None:
        expired = self._db.call(sweeps.expire_stale_sweep_leases)
        if expired:
            logger.warning("failed sweeps %s: their runners' leases expired", expired)
        expired_jobs = self._db.call(jobs.expire_stale_leases)
        if expired_jobs:
            logger.warning("failed or requeued jobs %s: their workers' leases expired", expired_jobs)

    @property
    def _db(self) -> Database:
        if self._database is None:
            raise RuntimeError("runner database is not initialised; call run()")
        return self._database
