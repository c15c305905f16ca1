"""Changes to what a model serves, then the refresh that makes this process serve them, and the MLflow alias that
follows a promotion.

Every registry write (a promotion, an alias, a model, a rollout started, ended or rolled back) runs as one
transaction in a thread, then refreshes this process's policy cache: the caller reads its own write at once, the
other processes within one refresh interval (POLICY_REFRESH_SECONDS). Sessions already running keep their policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session
from starlette.background import BackgroundTasks

from app.infra.errors import not_found
from app.infra.mlflow_alias import ChampionRun, champion_run, point_champion_alias
from app.schemas.policies import PolicyOut
from app.schemas.registry_views import policy_out
from app.serving.policy_cache import PolicyCache
from app.settings import Settings
from store import policies

T = TypeVar("T")


async def committed_then_refreshed(cache: PolicyCache, write: Callable[[], T]) -> T:
    """`write()` (which commits) off the event loop, then this process's cache refreshed: its answer."""
    result = await asyncio.to_thread(write)
    await cache.refresh()
    return result


def follow_champion(tasks: BackgroundTasks, settings: Settings, champion: ChampionRun) -> None:
    """Move the MLflow `champion` alias after the answer is sent: the tracking server may be slow or down."""
    tasks.add_task(point_champion_alias, settings, champion)


async def promote_policy(
    session: Session, cache: PolicyCache, settings: Settings, tasks: BackgroundTasks, policy_id: int
) -> PolicyOut:
    """Make the policy its model's champion (404 for an unknown one); the policy as it is now."""

    def promote_and_commit() -> tuple[PolicyOut, ChampionRun]:
        try:
            promoted = policies.promote_policy(session, policy_id)
        except policies.PolicyNotFoundError:
            raise not_found("policy", policy_id) from None
        # Read in the same transaction: on SQLite a read after the commit would begin a new (write-locking) one.
        champion = champion_run(session, settings, promoted)
        out = policy_out(session, promoted, settings.default_model)
        session.commit()
        return out, champion

    out, champion = await committed_then_refreshed(cache, promote_and_commit)
    follow_champion(tasks, settings, champion)
    return out
