"""The sweep runner (`python -m trainer sweeps`): claims queued sweeps from the database and runs each on Ray Tune.

Ray is the cluster named by RAY_ADDRESS (or --ray-address), or a local Ray this process starts for itself. One sweep
at a time per runner; a heartbeat thread renews the sweep's lease and notices cancellation, which stops Tune (and
every trial stops within one episode: its job is asked to cancel). Two runners never run the same sweep: claiming
is the job queue's (store.sweeps), and every runner write checks the lease.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from models.errors import one_line
from store import jobs, sweeps
from store.db import create_db_engine, make_session_factory, migrate
from store.tables import Sweep
from trainer.backoff import DB_UNAVAILABLE, Backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")
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
        self._sessions: sessionmaker[Session] | None = None

    def run(self) -> int:
        logger.info("sweep runner %s starting", self.options.runner_id)
        if not self._wait_for_database():
            return 0
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                try:
                    self._expire_stale_leases()
                    sweep = self._session_call(
                        lambda s: sweeps.claim_next_sweep(
                            s, runner_id=self.options.runner_id, lease_seconds=self.options.lease_seconds
                        )
                    )
                except DB_UNAVAILABLE as exc:
                    delay = backoff.next_delay()
                    logger.warning("database unavailable (%s); retrying in %.1f s", one_line(exc), delay)
                    self.stop.wait(delay)
                    continue
                backoff.reset()
                if sweep is None:
                    if self.options.once:
                        break
                    self.stop.wait(self.options.poll_interval)
                    continue
                self.run_sweep(sweep)
                if self.options.once:
                    break
        finally:
            if "ray" in sys.modules:  # imported with the first sweep (an idle runner stays light)
                sys.modules["ray"].shutdown()
        logger.info("sweep runner %s stopped", self.options.runner_id)
        return 0

    def run_sweep(self, sweep: Sweep) -> None:
        """Drive Tune for one claimed sweep and record how it ended."""
        runner_id = self.options.runner_id
        cancelled = threading.Event()
        heartbeat = _SweepHeartbeat(self._session_call, sweep.id, runner_id, self.options.lease_seconds, cancelled)
        heartbeat.start()
        status, error = "succeeded", None
        try:
            from trainer.sweeps.tune_run import connect_ray, run_tune

            connect_ray(self.options)
            run_tune(sweep, self.options, self._session_call, cancelled=cancelled, stop=self.stop)
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
            done = self._session_call(
                lambda s: sweeps.finish_sweep(s, sweep.id, runner_id=runner_id, status=status, error=error)
            )
        except sweeps.SweepLeaseLostError as exc:
            logger.warning("sweep %d: %s", sweep.id, exc)
            return
        logger.info("sweep %d: %s, best job %s, policy %s", sweep.id, done.status, done.best_job_id, done.policy_id)

    def _cancel_requested(self, sweep_id: int) -> bool:
        try:
            return self._session_call(
                lambda s: sweeps.heartbeat_sweep(
                    s, sweep_id, runner_id=self.options.runner_id, lease_seconds=self.options.lease_seconds
                )
            )
        except sweeps.SweepLeaseLostError:
            return False

    def _expire_stale_leases(self) -> None:
        expired = self._session_call(sweeps.expire_stale_sweep_leases)
        if expired:
            logger.warning("failed sweeps %s: their runners' leases expired", expired)
        expired_jobs = self._session_call(jobs.expire_stale_leases)
        if expired_jobs:
            logger.warning("failed or requeued jobs %s: their workers' leases expired", expired_jobs)

    def _wait_for_database(self) -> bool:
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

    def _session_call(self, work: Callable[[Session], T]) -> T:
        if self._sessions is None:
            raise RuntimeError("runner database is not initialised; call run()")
        with self._sessions() as session:
            return work(session)


class _SweepHeartbeat:
    """Renews the sweep's lease every lease/3 seconds; sets `cancelled` when cancellation was asked or the lease
    was lost (either way Tune must stop)."""

    def __init__(
        self,
        session_call: Callable[[Callable[[Session], Any]], Any],
        sweep_id: int,
        runner_id: str,
        lease_seconds: float,
        cancelled: threading.Event,
    ) -> None:
        self._session_call = session_call
        self._sweep_id = sweep_id
        self._runner_id = runner_id
        self._lease_seconds = lease_seconds
        self.cancelled = cancelled
        self.lease_lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-sweep-{sweep_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        interval = max(self._lease_seconds / 3, 0.05)
        while not self._done.wait(interval):
            try:
                cancel = self._session_call(
                    lambda s: sweeps.heartbeat_sweep(
                        s, self._sweep_id, runner_id=self._runner_id, lease_seconds=self._lease_seconds
                    )
                )
            except sweeps.SweepLeaseLostError as exc:
                logger.warning("sweep %d: %s", self._sweep_id, exc)
                self.lease_lost.set()
                self.cancelled.set()
                return
            except DB_UNAVAILABLE as exc:
                logger.warning("sweep %d: heartbeat failed (%s); will retry", self._sweep_id, one_line(exc))
                continue
            if cancel:
                self.cancelled.set()
