"""Rollouts: a challenger on trial against a model's champion, in shadow or canary mode, with a guard.

At most one rollout per model is `active` (a partial unique index says so). It ends `promoted` (the challenger
became champion), `rolled_back` (by request or by the guard, store.live_returns) or `ended` (deleted, or replaced
by a rollout of another challenger). Ended rollouts stay as the record: when and why. Every change bumps the
registry version, so each API process re-routes within one polling interval; sessions already running keep their
policy (the API pins them). The caller commits.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.registry_vocabulary import ROLLOUT_MODES
from store.registry import RegistryInputError, bump_version, champion_of, policy_of_model, set_champion
from store.tables.base import utcnow
from store.tables.registry import Model, Rollout

# The rollout history GET shows next to the active one.
HISTORY_LIMIT = 20


class NoActiveRolloutError(LookupError):
    """The model has no active rollout (HTTP 409)."""


def get_active_rollout(session: Session, model_id: int) -> Rollout | None:
    return session.scalar(select(Rollout).where(Rollout.model_id == model_id, Rollout.status == "active"))


def rollout_history(session: Session, model_id: int, *, limit: int = HISTORY_LIMIT) -> list[Rollout]:
    """The model's rollouts, newest first (the active one included)."""
    return list(
        session.scalars(select(Rollout).where(Rollout.model_id == model_id).order_by(Rollout.id.desc()).limit(limit))
    )


def start_rollout(
    session: Session,
    model: Model,
    *,
    challenger_id: int,
    mode: str,
    percent: float,
    min_episodes: int | None,
    max_regression: float | None,
    min_improvement: float | None = None,
) -> Rollout:
    """Start a trial of `challenger_id`, or retune the active one when it already tries that policy (its figures and
    session split are kept). A rollout of another challenger is ended (`ended`, replaced) in the same transaction.

    RegistryInputError naming the field for: a policy that is missing, of another model, or the champion itself; a
    model without a champion to compare against; a mode or percent out of range; a half-given guard.
    """
    if mode not in ROLLOUT_MODES:
        raise RegistryInputError("mode", f"must be one of {', '.join(ROLLOUT_MODES)}, got {mode!r}")
    if not 0 <= percent <= 100:
        raise RegistryInputError("percent", f"must be between 0 and 100, got {percent}")
    if (min_episodes is None) != (max_regression is None):
        raise RegistryInputError("guard", "give both min_episodes and max_regression, or neither")
    bump_version(session)
    policy_of_model(session, model, challenger_id, "challenger")
    champion_id = champion_of(session, model.id)
    if champion_id is None:
        raise RegistryInputError("challenger", f"model {model.name!r} has no champion yet to try a challenger against")
    if champion_id == challenger_id:
        raise RegistryInputError("challenger", f"policy {challenger_id} is the champion of {model.name!r} already")
    now = utcnow()
    active = get_active_rollout(session, model.id)
    if active is not None and active.challenger_id == challenger_id:
        active.mode, active.percent = mode, percent
        active.min_episodes, active.max_regression = min_episodes, max_regression
        active.min_improvement = min_improvement
        active.updated_at = now
        session.flush()
        return active
    if active is not None:
        _end(active, "ended", f"replaced by a rollout of policy {challenger_id}")
        session.flush()  # the unique index allows one active row: the old one must be ended first
    rollout = Rollout(
        model_id=model.id,
        champion_id=champion_id,
        challenger_id=challenger_id,
        mode=mode,
        percent=percent,
        min_episodes=min_episodes,
        max_regression=max_regression,
        min_improvement=min_improvement if min_episodes is not None else None,
        salt=secrets.token_hex(8),
        status="active",
        started_at=now,
        updated_at=now,
        shadow_samples=0,
        shadow_divergence_sum=0.0,
        shadow_latency_sum=0.0,
    )
    session.add(rollout)
    session.flush()
    return rollout


def end_rollout(session: Session, model: Model, *, status: str, reason: str) -> Rollout:
    """End the model's active rollout as `rolled_back` or `ended`; the champion stays. NoActiveRolloutError if none."""
    bump_version(session)
    active = get_active_rollout(session, model.id)
    if active is None:
        raise NoActiveRolloutError(f"model {model.name!r} has no active rollout")
    _end(active, status, reason)
    session.flush()
    return active


def promote_rollout(session: Session, model: Model) -> Rollout:
    """Make the active rollout's challenger the champion (the rollout ends `promoted`). NoActiveRolloutError if none."""
    bump_version(session)
    active = get_active_rollout(session, model.id)
    if active is None:
        raise NoActiveRolloutError(f"model {model.name!r} has no active rollout")
    set_champion(session, model.id, active.challenger_id)
    session.refresh(active)
    return active


def _end(rollout: Rollout, status: str, reason: str) -> None:
    now = utcnow()
    rollout.status = status
    rollout.ended_at = now
    rollout.updated_at = now
    rollout.end_reason = reason
