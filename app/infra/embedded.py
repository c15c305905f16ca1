"""The one-command run's helpers: the bootstrap job, and whether the embedded trainer worker and sweep runner can run
here (app.infra.supervisor runs them)."""

from __future__ import annotations

import importlib.util
import logging

from sqlalchemy.orm import Session, sessionmaker

from store.jobs import QueueFullError, count_jobs_by_status, enqueue_job, lock_queue
from store.policies import list_policies

logger = logging.getLogger(__name__)


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


def sweep_runner_available() -> bool:
    """Whether the sweep runner can run here: the trainer plus Ray Tune and Optuna (the `trainer` extra)."""
    return trainer_available() and all(importlib.util.find_spec(name) is not None for name in ("ray", "optuna"))
