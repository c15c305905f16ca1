"""One running job's record in the database, for every place a job trains (the worker, `worker --ray`'s Ray task,
a sweep's trial): its lease renewed by a heartbeat thread, and every episode and evaluation written as it happens.

The recorder is the trainer's progress callback: writing an episode also renews the lease and says whether
cancellation was asked, so training stops within one episode of a cancel, a lost lease or a shutdown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from store import jobs
from store.landed_writes import episode_landed, evaluation_landed
from trainer.claim_loop import Database
from trainer.heartbeat import Heartbeat
from trainer.records import EpisodeRecord, EvaluationRecord

Outcome = Literal["finished", "cancelled", "shutdown"]
ProgressHook = Callable[[EpisodeRecord, EvaluationRecord | None], None]


class JobRecorder:
    """Records one job held by `worker_id`. Use as a context manager (the heartbeat runs inside) and pass it to the
    trainer as its progress callback; `outcome` then says why training ended, and `on_progress` (an MLflow run,
    Tune's intermediate report) hears of every recorded episode. Every write waits out a database outage (and reads
    back a write whose commit may have landed); a lost lease ends training with LeaseLostError."""

    def __init__(
        self,
        database: Database,
        job_id: int,
        *,
        worker_id: str,
        lease_seconds: float,
        stop: threading.Event | None = None,
        on_progress: ProgressHook | None = None,
    ) -> None:
        self.job_id = job_id
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.outcome: Outcome = "finished"
        self.on_progress = on_progress
        self._write = database.retrying
        self._stop = stop or threading.Event()
        self._heartbeating = False
        self._heartbeat = Heartbeat(
            lambda: database.call(
                lambda s: jobs.heartbeat(s, job_id, worker_id=worker_id, lease_seconds=lease_seconds)
            ),
            what=f"job {job_id}",
            lease_seconds=lease_seconds,
            lease_lost_error=jobs.LeaseLostError,
        )

    def __enter__(self) -> JobRecorder:
        self._heartbeat.start()
        self._heartbeating = True
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        self.ending()

    def ending(self) -> None:
        """Stop heartbeating before the write that ends the job: a beat after it would find the job no longer
        running and report a lost lease. Idempotent; leaving the context stops it too."""
        if self._heartbeating:
            self._heartbeat.stop()

    def set_episodes_total(self, episodes_total: int) -> None:
        job_id, worker_id = self.job_id, self.worker_id
        self._write(
            f"job {job_id}: setting episodes_total",
            lambda s: jobs.set_episodes_total(s, job_id, worker_id=worker_id, episodes_total=episodes_total),
        )

    def __call__(self, episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> bool:
        """The trainer's progress callback: record, then say whether to go on (False stops training)."""
        job_id, worker_id = self.job_id, self.worker_id
        cancel = self._write(
            f"job {job_id}: recording episode {episode.episode}",
            lambda s: jobs.record_episode(
                s,
                job_id,
                worker_id=worker_id,
                lease_seconds=self.lease_seconds,
                episode=int(episode.episode),
                episode_return=float(episode.episode_return),
                avg_return_10=float(episode.avg_return_10),
                env_steps=int(episode.env_steps),
                wall_time=float(episode.wall_time),
            ),
            landed=lambda s: episode_landed(s, job_id, worker_id=worker_id, episode=int(episode.episode)),
        )
        if evaluation is not None:
            self._write(
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
                landed=lambda s: evaluation_landed(s, job_id, worker_id=worker_id, episode=int(evaluation.episode)),
            )
        if self._heartbeat.lease_lost.is_set():
            raise jobs.LeaseLostError(f"job {job_id}: lease lost while heartbeating")
        if cancel or self._heartbeat.should_stop.is_set():
            self.outcome = "cancelled"
            return False
        if self._stop.is_set():
            self.outcome = "shutdown"
            return False
        if self.on_progress is not None:
            self.on_progress(episode, evaluation)
        return True
