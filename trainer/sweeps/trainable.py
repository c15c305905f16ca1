"""One sweep trial, run by Ray Tune in a worker process on any node of the cluster.

It takes its job in the database (store.sweep_trials.begin_trial), trains with trainer.training.train, and writes
every episode and evaluation with the worker's own recorder (trainer.job_recorder: a heartbeat keeps its lease); each
evaluation is also reported to Tune for ASHA. At the end the exported actor is scored on held-out seeds, which is
the sweep's objective, stored as the job's policy (never promoted by itself), and reported to Tune last.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import tune
from sqlalchemy.orm import Session

from models.errors import one_line
from models.policy import NumpyActor
from models.training_config import TrainingConfig, load_job_config
from store import jobs
from store.landed_writes import job_ended_landed, trial_begun
from store.sweep_trials import begin_trial, record_heldout
from store.tables.work_queues import Job
from trainer.claim_loop import Database
from trainer.evaluation import EVAL_SEED_BASE, EvaluationStats, evaluate_policy
from trainer.job_recorder import JobRecorder
from trainer.records import EpisodeRecord, EvaluationRecord
from trainer.sweeps.reports import OBJECTIVE, PROGRESS, TIME_ATTR

logger = logging.getLogger(__name__)

# The objective's episodes reset with seeds HELDOUT_SEED_BASE, +1, ...: never the training seed (shifted past it
# if it falls inside) and never the periodic evaluations' seeds (EVAL_SEED_BASE, ...), which chose the exported
# checkpoint and so are no longer an unbiased score of it.
HELDOUT_SEED_BASE = 2 * EVAL_SEED_BASE
HELDOUT_EPISODES = 20


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep shares; passed with tune.with_parameters (not in the logged trial config)."""

    database_url: str
    sweep_id: int
    preset: str
    base: dict[str, Any]  # overrides of the preset, without "preset"
    lease_seconds: float
    model_id: int | None = None


def heldout_seed_base(config: TrainingConfig, episodes: int = HELDOUT_EPISODES) -> int:
    """The first held-out seed: HELDOUT_SEED_BASE unless the training seed falls among the held-out ones."""
    if HELDOUT_SEED_BASE <= config.seed < HELDOUT_SEED_BASE + episodes:
        return config.seed + 1
    return HELDOUT_SEED_BASE


def heldout_evaluation(actor_bytes: bytes, config: TrainingConfig) -> EvaluationStats:
    """The exported actor, as it would be served (numpy, no noise), on the held-out seeds."""
    actor = NumpyActor.from_bytes(actor_bytes)
    return evaluate_policy(
        actor.act,
        config.env_id,
        episodes=HELDOUT_EPISODES,
        max_episode_steps=config.max_episode_steps,
        seed_base=heldout_seed_base(config),
    )


def run_trial(params: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable (bind `context` with tune.with_parameters)."""
    import torch

    torch.set_num_threads(1)  # one CPU per trial is what Tune reserved for it
    trial_id = tune.get_context().get_trial_id() or f"local-{secrets.token_hex(4)}"
    node = ray.get_runtime_context().get_node_id()
    worker_id = f"ray-{trial_id}-{os.getpid()}-{secrets.token_hex(3)}"
    plain = {name: _plain(value) for name, value in params.items()}
    config_dict = {"preset": context.preset, **context.base, **plain}
    database = _database(context.database_url)
    job_id = database.retrying(
        f"trial {trial_id}: starting its job",
        lambda s: begin_trial(
            s,
            sweep_id=context.sweep_id,
            trial_id=trial_id,
            params=plain,
            config=config_dict,
            worker_id=worker_id,
            node=node,
            node_ip=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            lease_seconds=context.lease_seconds,
            model_id=context.model_id,
        ),
        landed=lambda s: trial_begun(s, worker_id=worker_id),
    )
    if job_id is None:
        logger.info("trial %s: sweep %d is no longer running; not starting", trial_id, context.sweep_id)
        return
    _TrialRun(database, job_id, worker_id, context.lease_seconds).run(config_dict)


class _TrialRun:
    def __init__(self, database: Database, job_id: int, worker_id: str, lease_seconds: float) -> None:
        self.database = database
        self.job_id = job_id
        self.worker_id = worker_id
        # Every write waits out a database outage, as the job worker's do: failing the trial instead would cost a
        # retry of its whole training (or the trial, once Tune's retries are used up) for a blip of the network.
        self.recorder = JobRecorder(database, job_id, worker_id=worker_id, lease_seconds=lease_seconds)
        self.episodes_total = 0

    def run(self, config_dict: dict[str, Any]) -> None:
        job_id, worker_id = self.job_id, self.worker_id
        try:
            config = load_job_config(config_dict)
        except ValueError as exc:
            error = str(exc)
            self._end("failed", lambda s: jobs.fail_job(s, job_id, worker_id=worker_id, error=error))
            return
        try:
            with self.recorder:
                self._train(config)
        except jobs.LeaseLostError as exc:
            # The sweep ended the trial (cancelled, stopped early) or a newer attempt took it over: nothing to write.
            logger.info("job %d: %s", job_id, exc)

    def _train(self, config: TrainingConfig) -> None:
        from trainer.training import train

        job_id, worker_id = self.job_id, self.worker_id
        self.episodes_total = config.episodes
        self.recorder.set_episodes_total(config.episodes)
        self.recorder.on_progress = self._report_progress
        try:
            result = train(config, self.recorder)
        except jobs.LeaseLostError:
            raise
        except Exception as exc:
            # A deterministic failure (bad environment, invalid export): retrying would fail alike, so the trial
            # ends here with the reason on its job instead of going back to Tune.
            logger.exception("job %d: training failed", job_id)
            error = one_line(exc)
            self._end("failed", lambda s: jobs.fail_job(s, job_id, worker_id=worker_id, error=error))
            return
        if self.recorder.outcome != "finished":
            self._end("cancelled", lambda s: jobs.cancel_running_job(s, job_id, worker_id=worker_id))
            return
        heldout = heldout_evaluation(result.actor_bytes, config)
        self.database.retrying(  # safe to repeat: it sets the same two numbers
            f"job {job_id}: recording its held-out return",
            lambda s: record_heldout(
                s, job_id, worker_id=worker_id, mean_return=heldout.mean_return, std_return=heldout.std_return
            ),
        )
        weights = result.actor_bytes
        job = self._end("succeeded", lambda s: jobs.complete_job(s, job_id, worker_id=worker_id, weights=weights))
        final_eval = result.evaluations[-1].mean_return if result.evaluations else None
        # The job is complete before Tune hears of it, so the runner never sees a finished trial still running.
        tune.report(
            {
                TIME_ATTR: len(result.episodes),
                PROGRESS: final_eval,
                OBJECTIVE: heldout.mean_return,
                "job_id": job_id,
                "policy_id": job.policy_id,
            }
        )

    def _end(self, status: str, write: Callable[[Session], Job]) -> Job:
        job_id, worker_id = self.job_id, self.worker_id
        self.recorder.ending()
        return self.database.retrying(
            f"job {job_id}: marking it {status}",
            write,
            landed=lambda s: job_ended_landed(s, job_id, worker_id=worker_id, status=status),
        )

    def _report_progress(self, _episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> None:
        # ASHA decides on these; the final report (with the objective) comes after training.
        if evaluation is not None and evaluation.episode + 1 < self.episodes_total:
            tune.report({TIME_ATTR: int(evaluation.episode) + 1, PROGRESS: float(evaluation.mean_return)})


# Ray reuses a worker process across the trials of a sweep: one engine per database per process, and few databases.
@functools.lru_cache(maxsize=4)
def _database(database_url: str) -> Database:
    return Database.connect(database_url)


def _plain(value: Any) -> Any:
    """Tune samples numpy scalars; the config model is strict and the job row is JSON, so make them Python's."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
