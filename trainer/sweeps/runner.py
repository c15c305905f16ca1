"""The sweep runner (`python -m trainer sweeps`): claims queued sweeps from the database and runs each on Ray Tune.

Ray is the cluster named by RAY_ADDRESS (or --ray-address), or a local Ray this process starts for itself. One sweep
at a time per runner; a heartbeat thread renews the sweep's lease and notices cancellation, which stops Tune (and
every trial stops within one episode: its job is asked to cancel). Two runners never run the same sweep: claiming
is the leased-work core's (store.leases, through store.sweeps), and every runner write checks the lease.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass

from models.errors import one_line
from store import jobs, sweeps
from store.tables import Sweep
from trainer.claim_loop import Database, claim_loop, wait_for_database
from trainer.heartbeat import Heartbeat

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "sweep runner shutting down"


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


class SweepRunner:
    def __init__(self, options: RunnerOptions, *, stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        self._database: Database | None = None

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
            if "ray" in sys.modules:  # imported with the first sweep (an idle runner stays light)
                sys.modules["ray"].shutdown()
        logger.info("sweep runner %s stopped", self.options.runner_id)
        return 0

    def run_sweep(self, sweep: Sweep) -> None:
        """Drive Tune for one claimed sweep and record how it ended."""
        runner_id = self.options.runner_id
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
            from trainer.sweeps.tune_run import connect_ray, run_tune

            connect_ray(self.options)
            run_tune(sweep, self.options, self._db.call, cancelled=cancelled, stop=self.stop)
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
        if heartbeat.lease_lost.is_set():
            logger.warning("sweep %d: lease lost; leaving its outcome to whoever holds it", sweep.id)
            return
        try:
            done = self._db.call(
                lambda s: sweeps.finish_sweep(s, sweep.id, runner_id=runner_id, status=status, error=error)
            )
        except sweeps.SweepLeaseLostError as exc:
            logger.warning("sweep %d: %s", sweep.id, exc)
            return
        logger.info("sweep %d: %s, best job %s, policy %s", sweep.id, done.status, done.best_job_id, done.policy_id)

    def _claim(self) -> Sweep | None:
        self._expire_stale_leases()
        options = self.options
        return self._db.call(
            lambda s: sweeps.claim_next_sweep(s, runner_id=options.runner_id, lease_seconds=options.lease_seconds)
        )

    def _renew(self, sweep_id: int) -> bool:
        options = self.options
        return self._db.call(
            lambda s: sweeps.heartbeat_sweep(
                s, sweep_id, runner_id=options.runner_id, lease_seconds=options.lease_seconds
            )
        )

    def _cancel_requested(self, sweep_id: int) -> bool:
        try:
            return self._renew(sweep_id)
        except sweeps.SweepLeaseLostError:
            return False

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
