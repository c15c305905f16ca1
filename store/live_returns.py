"""Live returns: what policies score on the episodes they actually control, summed over every API process, and the
rollout guard that acts on them.

An API process never writes per request. It sums finished episodes in memory per (rollout, policy) and shadow
comparisons per rollout, and every second writes those sums in one transaction (`flush`): one upsert row per pair it
saw, adding to the stored count, sum and sum of squares. So the database's load is bounded by processes x pairs per
second, not by requests or episodes. The same transaction then applies the guard of every canary it wrote for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.registry import bump_version, champion_of
from store.tables import LiveReturn, Model, Policy, Rollout, utcnow

# Outside any rollout: the rollout_id under which episodes of a model without a trial are summed.
NO_ROLLOUT = 0
# Two-sided 95% normal quantile: the interval is mean +- Z95 * std / sqrt(n) (a normal approximation, fine at the
# guard's episode counts; at small n it is a little narrow).
Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class ReturnSums:
    """Finished episodes to add: how many, the sum and the sum of squares of their returns."""

    episodes: int
    total: float
    total_sq: float


@dataclass(frozen=True, slots=True)
class ShadowSums:
    """Shadow comparisons to add to a rollout: samples, summed mean |divergence|, summed latency in seconds."""

    samples: int
    divergence: float
    latency: float


@dataclass(frozen=True, slots=True)
class ReturnStats:
    """Mean live return of a policy with its 95% confidence interval (None below two episodes)."""

    episodes: int
    mean: float | None
    std: float | None
    ci95: float | None

    @classmethod
    def from_sums(cls, episodes: int, total: float, total_sq: float) -> ReturnStats:
        if episodes < 1:
            return cls(0, None, None, None)
        mean = total / episodes
        if episodes < 2:
            return cls(episodes, mean, None, None)
        # Rounding can make a tiny variance negative: clamp.
        variance = max(0.0, (total_sq - episodes * mean * mean) / (episodes - 1))
        std = math.sqrt(variance)
        return cls(episodes, mean, std, Z95 * std / math.sqrt(episodes))


def add_returns(session: Session, sums: Mapping[tuple[int, int], ReturnSums]) -> None:
    """Add episode sums keyed by (rollout_id, policy_id): one upsert per key, in key order (no deadlocks between
    processes writing overlapping keys on PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    for (rollout_id, policy_id), add in sorted(sums.items()):
        statement = insert(LiveReturn).values(
            policy_id=policy_id,
            rollout_id=rollout_id,
            episodes=add.episodes,
            return_sum=add.total,
            return_sq_sum=add.total_sq,
            updated_at=now,
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[LiveReturn.policy_id, LiveReturn.rollout_id],
                set_={
                    "episodes": LiveReturn.episodes + statement.excluded.episodes,
                    "return_sum": LiveReturn.return_sum + statement.excluded.return_sum,
                    "return_sq_sum": LiveReturn.return_sq_sum + statement.excluded.return_sq_sum,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )


def add_shadow(session: Session, sums: Mapping[int, ShadowSums]) -> None:
    """Add shadow comparisons to their rollouts (ended ones too: the record keeps what was measured)."""
    for rollout_id, add in sorted(sums.items()):
        session.execute(
            update(Rollout)
            .where(Rollout.id == rollout_id)
            .values(
                shadow_samples=Rollout.shadow_samples + add.samples,
                shadow_divergence_sum=Rollout.shadow_divergence_sum + add.divergence,
                shadow_latency_sum=Rollout.shadow_latency_sum + add.latency,
            )
            .execution_options(synchronize_session=False)
        )


def stats(session: Session, rollout_id: int, policy_ids: Iterable[int]) -> dict[int, ReturnStats]:
    """The live return of each policy under the rollout (NO_ROLLOUT: outside any); policies without episodes too."""
    wanted = list(policy_ids)
    found = {
        row.policy_id: ReturnStats.from_sums(row.episodes, row.return_sum, row.return_sq_sum)
        for row in session.scalars(
            select(LiveReturn).where(LiveReturn.rollout_id == rollout_id, LiveReturn.policy_id.in_(wanted))
        )
    }
    return {policy_id: found.get(policy_id, ReturnStats(0, None, None, None)) for policy_id in wanted}


def all_stats(session: Session) -> list[tuple[str, int, int, ReturnStats]]:
    """(model name, rollout_id, policy_id, stats) of every row, for /metrics."""
    rows = session.execute(
        select(Model.name, LiveReturn)
        .join(Policy, Policy.id == LiveReturn.policy_id)
        .join(Model, Model.id == Policy.model_id)
        .order_by(LiveReturn.rollout_id, LiveReturn.policy_id)
    )
    return [
        (name, row.rollout_id, row.policy_id, ReturnStats.from_sums(row.episodes, row.return_sum, row.return_sq_sum))
        for name, row in rows
    ]


def guard_verdict(rollout: Rollout, champion_id: int | None, session: Session) -> str | None:
    """Why the guard rolls this rollout back now, or None.

    A canary with a guard trips when its challenger has finished `min_episodes` live episodes and its mean return is
    worse than the champion's by more than `max_regression`. The champion's figure is its episodes in this rollout,
    or its episodes outside any rollout when it had none here (a canary at 100%). A shadow challenger controls no
    episode, so the guard never applies to it.
    """
    if rollout.status != "active" or rollout.mode != "canary" or rollout.min_episodes is None:
        return None
    if champion_id is None or rollout.max_regression is None:
        return None
    figures = stats(session, rollout.id, [rollout.challenger_id, champion_id])
    challenger, champion = figures[rollout.challenger_id], figures[champion_id]
    if champion.episodes == 0:
        champion = stats(session, NO_ROLLOUT, [champion_id])[champion_id]
    if challenger.episodes < rollout.min_episodes or challenger.mean is None or champion.mean is None:
        return None
    regression = champion.mean - challenger.mean
    if regression <= rollout.max_regression:
        return None
    return (
        f"guard: challenger {rollout.challenger_id} returned {challenger.mean:.1f} on average over "
        f"{challenger.episodes} live episodes, {regression:.1f} below champion {champion_id}'s {champion.mean:.1f} "
        f"over {champion.episodes} (max_regression {rollout.max_regression:g})"
    )


def apply_guards(session: Session, rollout_ids: Iterable[int]) -> list[tuple[int, str]]:
    """Roll back every listed rollout whose guard trips; returns (rollout id, reason) of those rolled back.

    Safe from any number of processes at once: a verdict is read without locks, and only a tripped guard takes the
    registry lock (before the rollout row, the order every registry writer uses) and checks again, so exactly one
    process ends the rollout.
    """
    rolled_back = []
    for rollout_id in sorted(set(rollout_ids) - {NO_ROLLOUT}):
        rollout = session.get(Rollout, rollout_id)
        if rollout is None or guard_verdict(rollout, champion_of(session, rollout.model_id), session) is None:
            continue
        bump_version(session)
        rollout = session.get(Rollout, rollout_id, with_for_update=True, populate_existing=True)
        reason = None if rollout is None else guard_verdict(rollout, champion_of(session, rollout.model_id), session)
        if rollout is None or reason is None:
            continue
        now = utcnow()
        rollout.status, rollout.ended_at, rollout.updated_at, rollout.end_reason = "rolled_back", now, now, reason
        rolled_back.append((rollout_id, reason))
    session.flush()
    return rolled_back


def flush(
    session: Session, returns: Mapping[tuple[int, int], ReturnSums], shadow: Mapping[int, ShadowSums]
) -> list[tuple[int, str]]:
    """One API process's batch: add its sums, apply the guards they concern, commit. Returns the rollbacks."""
    try:
        add_returns(session, returns)
        add_shadow(session, shadow)
        rolled_back = apply_guards(session, (rollout_id for rollout_id, _policy in returns))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return rolled_back
