"""The policy registry: validated actor bytes with their metadata, and the pointer to the default policy."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.training_config import PROMOTE_RULES
from models.weights import decode_actor
from store.tables import SERVING_STATE_ID, Policy, ServingState, utcnow


class PolicyNotFoundError(LookupError):
    """No policy with that id."""


def register_policy(
    session: Session, *, weights: bytes, source_job_id: int | None = None, promote: str = "if_better"
) -> Policy:
    """Store an actor after strict validation, then apply the promotion rule. The caller commits.

    Raises models.weights.WeightsFormatError (a ValueError) for bytes that are not a valid `ddpg-actor/1` file,
    and ValueError for an unknown promotion rule. `if_better` makes the policy the default only when there is no
    default yet or its eval_mean_return is strictly higher than the default's (a score beats no score).
    """
    if promote not in PROMOTE_RULES:
        raise ValueError(f"promote must be one of {', '.join(PROMOTE_RULES)}, got {promote!r}")
    actor = decode_actor(weights)
    policy = Policy(
        created_at=utcnow(),
        sha256=hashlib.sha256(weights).hexdigest(),
        weights=weights,
        meta=actor.metadata(),
        env_id=actor.env_id,
        obs_dim=actor.obs_dim,
        act_dim=actor.act_dim,
        eval_mean_return=actor.eval_mean_return,
        source_job_id=source_job_id,
    )
    session.add(policy)
    session.flush()  # assigns policy.id
    if promote == "always" or (promote == "if_better" and _beats_default(session, policy)):
        _make_default(session, policy.id)
    return policy


def get_policy(session: Session, policy_id: int) -> Policy | None:
    """The policy, or None. Its `weights` load lazily on first access."""
    return session.get(Policy, policy_id)


def list_policies(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[Policy], int]:
    """A page of policies, newest first, and the total count."""
    total = session.scalar(select(func.count()).select_from(Policy)) or 0
    page = session.scalars(select(Policy).order_by(Policy.id.desc()).limit(limit).offset(offset)).all()
    return list(page), total


def get_serving_state(session: Session) -> tuple[int | None, int]:
    """(default_policy_id, version): one primary-key read, cheap enough to poll twice a second."""
    row = session.execute(
        select(ServingState.default_policy_id, ServingState.version).where(ServingState.id == SERVING_STATE_ID)
    ).first()
    return (None, 0) if row is None else (row[0], row[1])


def get_default_policy(session: Session) -> Policy | None:
    """The current default policy, or None when nothing has been promoted yet."""
    default_id, _version = get_serving_state(session)
    return None if default_id is None else session.get(Policy, default_id)


def promote_policy(session: Session, policy_id: int) -> Policy:
    """Make the policy the default (bumping the serving version even if it already was). The caller commits."""
    policy = session.get(Policy, policy_id)
    if policy is None:
        raise PolicyNotFoundError(f"policy {policy_id} not found")
    _make_default(session, policy.id)
    return policy


def _beats_default(session: Session, candidate: Policy) -> bool:
    # FOR UPDATE on the single serving row serialises concurrent promotions on PostgreSQL, so two `if_better`
    # registrations cannot both compare against the same old default. (SQLite transactions are already serial.)
    default_id = session.scalar(
        select(ServingState.default_policy_id).where(ServingState.id == SERVING_STATE_ID).with_for_update()
    )
    if default_id is None:
        return True
    current = session.scalar(select(Policy.eval_mean_return).where(Policy.id == default_id))
    if candidate.eval_mean_return is None:
        return False
    return current is None or candidate.eval_mean_return > current


def _make_default(session: Session, policy_id: int) -> None:
    result = session.execute(
        update(ServingState)
        .where(ServingState.id == SERVING_STATE_ID)
        .values(default_policy_id=policy_id, version=ServingState.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 1) == 0:
        # The migration creates the row; this only repairs a database where someone deleted it.
        session.add(ServingState(id=SERVING_STATE_ID, default_policy_id=policy_id, version=1, updated_at=utcnow()))
        session.flush()
