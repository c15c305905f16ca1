"""A model's rollout (a shadow or canary trial of a challenger): start or retune, end, promote, roll back.

Each change is one transaction, answered with the rollout as it now stands and routed by at once in this process
(the others within one refresh interval); a promotion moves MLflow's `champion` alias too.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.background import BackgroundTasks

from app.infra.errors import ApiError, field_error
from app.infra.mlflow_alias import ChampionRun, champion_run
from app.schemas.models import RolloutIn, RolloutOut
from app.schemas.registry_views import rollout_out
from app.services.model_registry import model_or_404
from app.services.promotion import committed_then_refreshed, follow_champion
from app.serving.policy_cache import PolicyCache
from app.settings import Settings
from store import registry, rollouts
from store.tables.registry import Model, Policy, Rollout

Change = Callable[[Session, Model], Rollout]


async def start(session: Session, cache: PolicyCache, name: str, body: RolloutIn) -> RolloutOut:
    """Start a trial of the body's challenger, or retune the active one if it already tries that policy."""
    guard = body.guard

    def start_or_retune(db: Session, model: Model) -> Rollout:
        return rollouts.start_rollout(
            db,
            model,
            challenger_id=body.challenger,
            mode=body.mode,
            percent=body.percent,
            min_episodes=None if guard is None else guard.min_episodes,
            max_regression=None if guard is None else guard.max_regression,
            min_improvement=None if guard is None else guard.min_improvement,
        )

    return (await _change(session, cache, name, start_or_retune))[0]


async def end(session: Session, cache: PolicyCache, name: str) -> RolloutOut:
    """End the active rollout (`ended`); the champion stays. 409 when there is none."""

    def end_by_request(db: Session, model: Model) -> Rollout:
        return rollouts.end_rollout(db, model, status="ended", reason="ended by request")

    return (await _change(session, cache, name, end_by_request))[0]


async def roll_back(session: Session, cache: PolicyCache, name: str) -> RolloutOut:
    """End the trial (`rolled_back`): new sessions get the champion only. 409 when there is none."""

    def roll_back_by_request(db: Session, model: Model) -> Rollout:
        return rollouts.end_rollout(db, model, status="rolled_back", reason="rolled back by request")

    return (await _change(session, cache, name, roll_back_by_request))[0]


async def promote(
    session: Session, cache: PolicyCache, settings: Settings, tasks: BackgroundTasks, name: str
) -> RolloutOut:
    """Make the challenger the champion (the rollout ends `promoted`); MLflow's alias follows. 409 without one."""
    result, champion = await _change(session, cache, name, rollouts.promote_rollout, promoting=settings)
    if champion is not None:
        follow_champion(tasks, settings, champion)
    return result


async def _change(
    session: Session, cache: PolicyCache, name: str, change: Change, *, promoting: Settings | None = None
) -> tuple[RolloutOut, ChampionRun | None]:
    """Apply `change` to the model's rollout in one transaction: the rollout as answered, and, when the change is a
    promotion (`promoting`: the settings that name the registered model), where MLflow's alias goes."""

    def write() -> tuple[RolloutOut, ChampionRun | None]:
        model = model_or_404(session, name)
        try:
            rollout = change(session, model)
        except registry.RegistryInputError as exc:
            session.rollback()
            raise field_error(exc.field, exc.message) from None
        except rollouts.NoActiveRolloutError as exc:
            session.rollback()
            raise ApiError(409, "conflict", str(exc)) from None
        # Read before the commit: on SQLite a read after it would begin a transaction holding the write lock until
        # the request ends, and the cache refresh after it would wait on it.
        result = rollout_out(session, rollout, registry.champion_of(session, model.id))
        champion = None
        if promoting is not None:
            promoted = session.get(Policy, rollout.challenger_id)
            champion = None if promoted is None else champion_run(session, promoting, promoted)
        session.commit()
        return result, champion

    return await committed_then_refreshed(cache, write)
