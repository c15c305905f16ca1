"""The learner process (`python -m trainer learner`): claims queued online learners and runs them, one at a time.

It never touches the job queue, so it runs beside the job worker (`make run` and docker compose start both). A
claimed learner (store.learners) is resumed from the checkpoint written with its last publish, its replay buffer
refilled from the model's stored experience; a heartbeat thread renews the lease, and the counters are written four
times a second. The learner stops when it is stopped or replaced (its row is no longer this process's), and on
SIGTERM / SIGINT gives its row back to the queue, so another process takes it over without waiting for the lease.
A process killed outright leaves the row to its lease: once it expires, any learner process requeues and claims it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from models.errors import one_line
from models.registry_vocabulary import CLIENT_ENV_PREFIX
from models.training_config import TrainingConfig, load_job_config
from models.weights import WeightsFormatError
from store import learners
from store.chunk_storage import open_chunk_storage
from store.policies import PolicyModelMismatchError
from store.tables.registry import Model
from store.tables.work_queues import Learner
from trainer.claim_loop import Database, DatabaseGoneError, claim_loop, wait_for_database
from trainer.env import EnvSpec
from trainer.heartbeat import Heartbeat
from trainer.online.checkpoint import CheckpointFormatError
from trainer.online.database_source import ExperienceSource
from trainer.online.learner import LearnerProgress, OnlineLearner
from trainer.settings import (
    LearnerProcessSettings,
    claimer_parser,
    default_holder_id,
    parse_flags,
    start_process,
)

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "learner process shutting down"
# Seconds between counter writes (GET shows them; clients driving with max_lag wait on them), and between reads of
# an idle source (a read is two indexed queries).
PROGRESS_INTERVAL = 0.25
IDLE_WAIT = 0.05


@dataclass(frozen=True)
class LearnerOptions:
    database_url: str
    worker_id: str
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    once: bool = False
    settings: LearnerProcessSettings = field(default_factory=LearnerProcessSettings)


class LearnerSetupError(ValueError):
    """The learner cannot run (its config, its model's spaces); the message says why."""


def env_spec_of(model: Model) -> EnvSpec:
    """The learner's view of a model's environment: its sizes and action bounds (from the model's spaces)."""
    spaces = model.spaces
    try:
        obs_dim, act_dim = int(spaces["obs_dim"]), int(spaces["act_dim"])
        low = np.asarray(spaces["action_low"], dtype=np.float32)
        high = np.asarray(spaces["action_high"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise LearnerSetupError(f"model {model.name!r} has no usable spaces: {one_line(exc)}") from None
    if low.shape != (act_dim,) or high.shape != (act_dim,) or not (np.all(np.isfinite(low)) and np.all(low < high)):
        raise LearnerSetupError(f"model {model.name!r} needs finite action bounds with low < high to learn")
    return EnvSpec(
        env_id=model.env_id or f"{CLIENT_ENV_PREFIX}{model.name}",
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=low,
        action_high=high,
    )


class LearnerProcess:
    """Claims and runs learners until stopped."""

    def __init__(self, options: LearnerOptions, *, stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        self._database: Database | None = None

    def run(self) -> int:
        logger.info("learner process %s starting", self.options.worker_id)
        self._database = wait_for_database(self.options.database_url, self.stop)
        if self._database is None:
            return 0
        claim_loop(
            self._claim,
            self._run_claimed,
            stop=self.stop,
            poll_interval=self.options.poll_interval,
            once=self.options.once,
        )
        logger.info("learner process %s stopped", self.options.worker_id)
        return 0

    @property
    def _db(self) -> Database:
        if self._database is None:
            raise RuntimeError("the database is not initialised; call run()")
        return self._database

    def _claim(self) -> tuple[Learner, Model] | None:
        expired = self._db.call(learners.expire_stale_learner_leases)
        if expired:
            logger.warning("learners %s queued for takeover: their processes' leases expired", expired)
        options = self.options

        def claim(session: Session) -> tuple[Learner, Model] | None:
            learner = learners.claim_next_learner(
                session, worker_id=options.worker_id, lease_seconds=options.lease_seconds
            )
            if learner is None:
                return None
            model = session.get(Model, learner.model_id)
            assert model is not None  # the learner's foreign key
            session.expunge_all()
            return learner, model

        return self._db.call(claim)

    def _run_claimed(self, claimed: tuple[Learner, Model]) -> None:
        row, model = claimed
        learner_id, worker_id, lease = row.id, self.options.worker_id, self.options.lease_seconds
        logger.info("learner %d of model %r: claimed (attempt %d)", learner_id, model.name, row.attempts)
        heartbeat = Heartbeat(
            lambda: self._db.call(
                lambda s: learners.heartbeat_learner(s, learner_id, worker_id=worker_id, lease_seconds=lease)
            ),
            what=f"learner {learner_id}",
            lease_seconds=lease,
            lease_lost_error=learners.LearnerLeaseLostError,
        )
        heartbeat.start()
        try:
            try:
                self._train(self._build(row, model), learner_id, heartbeat)
            except (learners.LearnerLeaseLostError, DatabaseGoneError):
                raise
            except Exception as exc:
                # A setup problem, or a bug: the row says why in one line (the traceback is in the log), rather than
                # a crash, a restart and a takeover that would fail the same way again and again.
                if not isinstance(exc, LearnerSetupError):
                    logger.exception("learner %d: failed", learner_id)
                error = one_line(exc) if not isinstance(exc, LearnerSetupError) else str(exc)
                logger.error("learner %d: %s", learner_id, error)
                self._db.retrying(
                    f"learner {learner_id}: failing it",
                    lambda s: learners.fail_learner(s, learner_id, worker_id=worker_id, error=error),
                )
        except learners.LearnerLeaseLostError as exc:
            logger.info("learner %d: no longer held (%s); stopping", learner_id, exc)
        except DatabaseGoneError as exc:
            logger.warning("learner %d: abandoned (%s); its lease will expire", learner_id, exc)
        finally:
            heartbeat.stop()

    def _build(self, row: Learner, model: Model) -> OnlineLearner:
        try:
            config: TrainingConfig = load_job_config(row.config)
        except ValueError as exc:
            raise LearnerSetupError(str(exc)) from None
        spec = env_spec_of(model)
        learner_id, worker_id = row.id, self.options.worker_id
        storage = open_chunk_storage(self.options.settings.experience_url)
        source = ExperienceSource(self._db, model.id, spec.obs_dim, spec.act_dim, storage)
        checkpoint = self._db.call(lambda s: learners.learner_checkpoint(s, learner_id))

        def publish(actor: bytes, checkpoint: bytes, progress: LearnerProgress) -> None:
            counters = counters_of(progress)
            try:
                policy_id = self._db.retrying(
                    f"learner {learner_id}: publishing",
                    lambda s: learners.publish_policy(
                        s, learner_id, worker_id=worker_id, weights=actor, checkpoint=checkpoint, counters=counters
                    ),
                )
            except (WeightsFormatError, PolicyModelMismatchError) as exc:
                raise LearnerSetupError(f"cannot publish: {exc}") from None
            logger.info(
                "learner %d: published policy %d after %d updates (%d transitions)",
                learner_id,
                policy_id,
                progress.updates,
                progress.transitions_consumed,
            )

        try:
            return OnlineLearner(config, spec, source, publish, publish_every=row.publish_every, checkpoint=checkpoint)
        except CheckpointFormatError as exc:
            logger.warning("learner %d: starting afresh, its checkpoint does not fit: %s", learner_id, exc)
            return OnlineLearner(config, spec, source, publish, publish_every=row.publish_every)

    def _train(self, online: OnlineLearner, learner_id: int, heartbeat: Heartbeat) -> None:
        worker_id = self.options.worker_id
        last_progress = 0.0
        while not (self.stop.is_set() or heartbeat.should_stop.is_set()):
            busy = online.step()
            now = time.monotonic()
            if now - last_progress >= PROGRESS_INTERVAL:
                self._record_progress(learner_id, counters_of(online.progress))
                last_progress = now
            if not busy:
                self.stop.wait(IDLE_WAIT)
        if heartbeat.lease_lost.is_set() or heartbeat.should_stop.is_set():
            logger.info("learner %d: stopped or taken over; stopping", learner_id)
            return
        heartbeat.stop()
        self._db.retrying(
            f"learner {learner_id}: releasing it",
            lambda s: learners.release_learner(s, learner_id, worker_id=worker_id, reason=SHUTDOWN_REASON),
        )
        logger.info("learner %d: released for takeover (%s)", learner_id, SHUTDOWN_REASON)

    def _record_progress(self, learner_id: int, counters: learners.Counters) -> None:
        worker_id, lease = self.options.worker_id, self.options.lease_seconds
        self._db.retrying(
            f"learner {learner_id}: recording progress",
            lambda s: learners.record_progress(
                s, learner_id, worker_id=worker_id, counters=counters, lease_seconds=lease
            ),
        )


def counters_of(progress: LearnerProgress) -> learners.Counters:
    return learners.Counters(
        transitions_consumed=progress.transitions_consumed,
        updates=progress.updates,
        cursor=progress.cursor,
        pending=progress.pending,
        publishes=progress.publishes,
    )


def parse_args(argv: list[str] | None = None) -> LearnerOptions:
    settings, parser = claimer_parser(
        LearnerProcessSettings,
        "learner",
        "Run online learners: DDPG from the models' recorded experience.",
        holder="process",
        row="learner",
    )
    parser.set_defaults(lease_seconds=settings.learner_lease_seconds)
    settings, args, shared = parse_flags(settings, parser, argv)
    shared.pop("ray_address")
    return LearnerOptions(worker_id=args.process_id or default_holder_id(), settings=settings, **shared)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m trainer learner`."""
    options = parse_args(argv)
    stop = start_process(options.settings, "giving the learner back to the queue")
    return LearnerProcess(options, stop=stop).run()


if __name__ == "__main__":
    sys.exit(main())
