"""Online learners: the learners table is the learner processes' queue, one live learner (queued or running) per model.

The queue contract is store.leases', as for jobs and sweeps: a `python -m trainer learner` process claims the oldest
queued learner, holds it under a lease it renews, and every write of the holder first checks that it still holds the
row (LearnerLeaseLostError otherwise). Unlike a job, a learner has no natural end: a learner whose holder stopped
renewing is queued again (`expire_stale_learner_leases`) and the next process to claim it resumes from the checkpoint
written with its last publish. Stopping (DELETE) and replacing (PUT again) end the row at once from the API side: the
holder's next write finds the row no longer its own, and it stops.

API side (the caller commits): start_learner, live_learner, latest_learner, stop_learner, publications,
expire_stale_learner_leases (commits). Holder side (each commits): claim_next_learner, heartbeat_learner,
record_progress, publish_policy, fail_learner, learner_checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from models.registry_vocabulary import LEARNER_PUBLISH_MODES
from store import leases
from store.policies import register_policy
from store.registry import bump_version, champion_of, set_champion
from store.rollouts import start_rollout
from store.tables.base import utcnow
from store.tables.registry import Model
from store.tables.work_queues import Learner, LearnerPublication

# How many published policies GET shows, newest first.
PUBLICATIONS_SHOWN = 20


class LearnerNotFoundError(leases.LeaseStateError, LookupError):
    """No such learner, or the model has no live learner (HTTP 404)."""


class LearnerLeaseLostError(leases.LeaseStateError):
    """The process no longer holds the learner: stopped, replaced, or taken over after its lease expired."""


LEARNERS = leases.LeaseKind(
    Learner,
    noun="learner",
    holder="learner process",
    not_found=LearnerNotFoundError,
    lease_lost=LearnerLeaseLostError,
)


@dataclass(frozen=True, slots=True)
class Counters:
    """A learner's progress as its holder reports it (trainer.online.learner.LearnerProgress, store-side)."""

    transitions_consumed: int
    updates: int
    cursor: int
    pending: int
    publishes: int


# --- API side -------------------------------------------------------------------------------------------


def live_learner(session: Session, model_id: int) -> Learner | None:
    """The model's queued or running learner, or None."""
    return session.scalar(
        select(Learner).where(Learner.model_id == model_id, Learner.status.in_(("queued", "running")))
    )


def latest_learner(session: Session, model_id: int) -> Learner | None:
    """The model's live learner, else the one that ended last, else None."""
    return live_learner(session, model_id) or session.scalar(
        select(Learner).where(Learner.model_id == model_id).order_by(Learner.id.desc()).limit(1)
    )


def start_learner(
    session: Session,
    model: Model,
    *,
    config: dict[str, Any],
    publish_every: int,
    publish: str,
    canary: dict[str, Any] | None,
    exploration: dict[str, Any] | None,
) -> Learner:
    """Queue a learner for the model. A live learner of the model is replaced: it ends `cancelled` and the new one
    starts from its checkpoint and counters (the checkpoint is used only if it fits the new networks). The caller
    commits; the partial unique index refuses a second live learner raced in by another replica."""
    if publish not in LEARNER_PUBLISH_MODES:
        raise ValueError(f"publish must be one of {', '.join(LEARNER_PUBLISH_MODES)}, got {publish!r}")
    # The registry's lock and version: every API process learns that the model learns (its warm-up) within one poll,
    # and two replicas starting learners for one model serialise here.
    bump_version(session)
    learner = Learner(
        model_id=model.id,
        status="queued",
        config=dict(config),
        publish_every=publish_every,
        publish=publish,
        canary=None if canary is None else dict(canary),
        exploration=None if exploration is None else dict(exploration),
        created_at=utcnow(),
        cancel_requested=False,
        attempts=0,
        transitions_consumed=0,
        updates=0,
        cursor=0,
        pending=0,
        publishes=0,
    )
    previous = session.scalar(
        select(Learner)
        .options(undefer(Learner.checkpoint))
        .where(Learner.model_id == model.id, Learner.status.in_(("queued", "running")))
        .with_for_update()
    )
    if previous is not None:
        learner.checkpoint = previous.checkpoint
        learner.cursor, learner.pending = previous.cursor, previous.pending
        learner.transitions_consumed, learner.updates = previous.transitions_consumed, previous.updates
        learner.publishes, learner.last_policy_id = previous.publishes, previous.last_policy_id
        learner.last_publish_at = previous.last_publish_at
        previous.error = "replaced by a new learner of the model"
        leases.finish(previous, "cancelled")
        session.flush()  # the unique index allows one live row: the old one must end first
    session.add(learner)
    session.flush()
    return learner


def stop_learner(session: Session, model: Model) -> Learner:
    """End the model's live learner `cancelled` now; its process stops at its next write. LearnerNotFoundError if
    it has none. The caller commits."""
    bump_version(session)
    learner = session.scalar(
        select(Learner).where(Learner.model_id == model.id, Learner.status.in_(("queued", "running"))).with_for_update()
    )
    if learner is None:
        raise LearnerNotFoundError(f"model {model.name!r} has no running learner")
    learner.error = "stopped by request"
    learner.cancel_requested = True
    leases.finish(learner, "cancelled")
    return learner


def publications(session: Session, learner_id: int, *, limit: int = PUBLICATIONS_SHOWN) -> list[LearnerPublication]:
    """The learner's published policies, newest first (those of the learners it replaced are theirs)."""
    return list(
        session.scalars(
            select(LearnerPublication)
            .where(LearnerPublication.learner_id == learner_id)
            .order_by(LearnerPublication.published_at.desc(), LearnerPublication.policy_id.desc())
            .limit(limit)
        )
    )


def expire_stale_learner_leases(session: Session, *, now: datetime | None = None) -> list[int]:
    """Queue again every running learner whose process stopped renewing its lease, so another process takes it over
    from its checkpoint. Commits; returns their ids."""
    return leases.expire_stale(session, LEARNERS, end=_requeue, now=now)


def _requeue(learner: Learner, reason: str, _now: datetime) -> None:
    learner.status = "queued"
    learner.error = f"attempt {learner.attempts} ended: {reason}; queued for takeover"
    learner.worker_id = None
    learner.heartbeat_at = None
    learner.lease_expires_at = None


# --- holder side ----------------------------------------------------------------------------------------


def claim_next_learner(session: Session, *, worker_id: str, lease_seconds: float) -> Learner | None:
    """Atomically take the oldest queued learner: `running` under this process with a fresh lease. Commits."""
    return leases.claim_oldest(
        session, LEARNERS, holder_id=worker_id, lease_seconds=lease_seconds, prepare=_new_attempt
    )


def _new_attempt(learner: Learner) -> None:
    learner.attempts += 1


def learner_checkpoint(session: Session, learner_id: int) -> bytes | None:
    """The checkpoint to resume from (None for a learner that never published)."""
    return session.scalar(select(Learner.checkpoint).where(Learner.id == learner_id))


def heartbeat_learner(session: Session, learner_id: int, *, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether stopping was requested. Commits. LearnerLeaseLostError if not ours."""
    return leases.renew(session, LEARNERS, learner_id, holder_id=worker_id, lease_seconds=lease_seconds)


def record_progress(
    session: Session, learner_id: int, *, worker_id: str, counters: Counters, lease_seconds: float
) -> None:
    """Write the counters and extend the lease, in one transaction. Commits."""
    with leases.owned(session, LEARNERS, learner_id, worker_id) as learner:
        _write_counters(learner, counters)
        leases.extend_lease(learner, lease_seconds)


def publish_policy(
    session: Session, learner_id: int, *, worker_id: str, weights: bytes, checkpoint: bytes, counters: Counters
) -> int:
    """Register the actor as a policy of the learner's model and make it serve as the learner's mode says, with the
    checkpoint and counters, in one transaction. Returns the policy id. Commits.

    `champion`: the policy becomes the champion (new sessions get it within the registry's polling interval).
    `canary`: the policy becomes the challenger of a canary rollout with the learner's canary settings (replacing a
    previous challenger's rollout); the model's first policy, with no champion to compare against, becomes champion.
    """
    with leases.owned(session, LEARNERS, learner_id, worker_id) as learner:
        policy = register_policy(session, weights=weights, promote="never", model_id=learner.model_id)
        role = "champion"
        if learner.publish == "canary" and champion_of(session, learner.model_id) is not None:
            canary = learner.canary or {}
            model = session.get(Model, learner.model_id)
            assert model is not None  # the learner's foreign key
            start_rollout(
                session,
                model,
                challenger_id=policy.id,
                mode="canary",
                percent=float(canary.get("percent", 50.0)),
                min_episodes=canary.get("min_episodes"),
                max_regression=canary.get("max_regression"),
                min_improvement=canary.get("min_improvement"),
            )
            role = "challenger"
        else:
            set_champion(session, learner.model_id, policy.id)
            role = "champion" if learner.publish == "champion" else "champion_first"
        now = utcnow()
        session.add(
            LearnerPublication(
                policy_id=policy.id,
                learner_id=learner_id,
                published_at=now,
                updates=counters.updates,
                transitions_consumed=counters.transitions_consumed,
                role=role,
            )
        )
        _write_counters(learner, counters)
        learner.checkpoint = checkpoint
        learner.last_policy_id = policy.id
        learner.last_publish_at = now
        return policy.id


def fail_learner(session: Session, learner_id: int, *, worker_id: str, error: str) -> None:
    """End the learner `failed` (it cannot run: an invalid config, a model without spaces). Commits."""
    with leases.owned(session, LEARNERS, learner_id, worker_id) as learner:
        bump_version(session)
        leases.fail(learner, error)


def _write_counters(learner: Learner, counters: Counters) -> None:
    learner.transitions_consumed = counters.transitions_consumed
    learner.updates = counters.updates
    learner.cursor = counters.cursor
    learner.pending = counters.pending
    learner.publishes = counters.publishes
    learner.progress_at = utcnow()


def release_learner(session: Session, learner_id: int, *, worker_id: str, reason: str) -> None:
    """Give the learner up (the process is shutting down): queued again at once, for another process to take over
    from its checkpoint. Commits."""
    with leases.owned(session, LEARNERS, learner_id, worker_id) as learner:
        _requeue(learner, reason, utcnow())
