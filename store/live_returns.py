"""Live returns: what policies score on the episodes they actually control, summed over every API process, and the
rollout guard that acts on them.

An API process never writes per request. It sums finished episodes in memory per (rollout, policy) and shadow
comparisons per rollout, and every second writes those sums in one transaction (`flush`): one upsert row per pair it
saw, adding to the stored count, sum and sum of squares, and per bucket of the return (store.return_buckets). So
the database's load is bounded by processes x pairs per second, not by requests or episodes. The same transaction
then applies the guard of every canary it wrote for.

Exactly once: a batch carries an id (the process's and a sequence number), inserted in the batch's transaction.
When a COMMIT's reply is lost the process cannot know whether the batch landed, so it retries the same batch with
the same id, and a batch whose id is already stored adds nothing. Ids are kept FLUSH_IDS_KEPT_FOR (a retry comes
within seconds; a process that cannot reach the database for longer than that keeps retrying the same id, and only
then could a lost reply count twice).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.reward_ranges import stored_range
from store.registry import bump_version, champion_of, set_champion
from store.return_buckets import TRIM_FRACTION, add_buckets, bucket_of, trimmed_means
from store.tables.base import utcnow
from store.tables.registry import Model, Policy, Rollout
from store.tables.serving_records import LiveReturn, LiveReturnFlush

# Outside any rollout: the rollout_id under which episodes of a model without a trial are summed.
NO_ROLLOUT = 0
# Two-sided 95% normal quantile: the interval is mean +- Z95 * std / sqrt(n) (a normal approximation, fine at the
# guard's episode counts; at small n it is a little narrow).
Z95 = 1.959964
# How long a flush id is kept (see the module docstring), and how many expired ids one flush deletes at most.
FLUSH_IDS_KEPT_FOR = timedelta(hours=1)
_PRUNE_BATCH = 1000
# What the guard compares: the mean where the model declares a reward range (every reward is bounded, so one
# episode's weight is too), else a trimmed mean (store.return_buckets), which one episode cannot move without bound.
MEAN = "mean"
TRIMMED_MEAN = f"trimmed_mean_{round(TRIM_FRACTION * 100)}"


@dataclass(frozen=True, slots=True)
class ReturnSums:
    """Finished episodes to add: how many, the sum and the sum of squares of their returns."""

    episodes: int
    total: float
    total_sq: float
    # (bucket, episodes, sum of returns) per bucket of store.return_buckets, in bucket order: the trimmed mean's input.
    buckets: tuple[tuple[int, int, float], ...] = ()

    @classmethod
    def of(cls, returns: Iterable[float]) -> ReturnSums:
        values = list(returns)
        per_bucket: dict[int, list[float]] = defaultdict(list)
        for value in values:
            per_bucket[bucket_of(value)].append(value)
        buckets = tuple((bucket, len(found), sum(found)) for bucket, found in sorted(per_bucket.items()))
        return cls(len(values), sum(values), sum(v * v for v in values), buckets)


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
    add_buckets(
        session,
        {
            (rollout_id, policy_id, bucket): (count, total)
            for (rollout_id, policy_id), add in sums.items()
            for bucket, count, total in add.buckets
        },
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


def guard_statistic(session: Session, model_id: int) -> str:
    """MEAN when the model declares a reward range, else TRIMMED_MEAN (see their definitions)."""
    model = session.get(Model, model_id)
    return MEAN if model is not None and stored_range(model.spaces) is not None else TRIMMED_MEAN


def _figures(
    session: Session, rollout_id: int, policy_ids: list[int], statistic: str
) -> dict[int, tuple[int, float | None]]:
    """(episodes, the guard's statistic) of each policy under the rollout."""
    found = stats(session, rollout_id, policy_ids)
    if statistic == MEAN:
        return {policy_id: (figure.episodes, figure.mean) for policy_id, figure in found.items()}
    trimmed = trimmed_means(session, rollout_id, policy_ids)
    return {policy_id: (figure.episodes, trimmed[policy_id]) for policy_id, figure in found.items()}


def _live_figures(
    rollout: Rollout, champion_id: int, session: Session
) -> tuple[str, tuple[int, float | None], tuple[int, float | None]]:
    """The guard's statistic, and (episodes, return) of the challenger and of the champion: its episodes in this
    rollout, or its episodes outside any rollout when it had none here (a canary at 100%)."""
    statistic = guard_statistic(session, rollout.model_id)
    figures = _figures(session, rollout.id, [rollout.challenger_id, champion_id], statistic)
    champion = figures[champion_id]
    if champion[0] == 0:
        champion = _figures(session, NO_ROLLOUT, [champion_id], statistic)[champion_id]
    return statistic, figures[rollout.challenger_id], champion


def guard_verdict(rollout: Rollout, champion_id: int | None, session: Session) -> str | None:
    """Why the guard rolls this rollout back now, or None.

    A canary with a guard trips when its challenger has finished `min_episodes` live episodes and its return
    (the statistic of `guard_statistic`) is worse than the champion's by more than `max_regression`. The champion's
    figure is its episodes in this rollout, or its episodes outside any rollout when it had none here (a canary at
    100%). A shadow challenger controls no episode, so the guard never applies to it.
    """
    if rollout.status != "active" or rollout.mode != "canary" or rollout.min_episodes is None:
        return None
    if champion_id is None or rollout.max_regression is None:
        return None
    statistic, (challenger_episodes, challenger), (champion_episodes, champion) = _live_figures(
        rollout, champion_id, session
    )
    if challenger_episodes < rollout.min_episodes or challenger is None or champion is None:
        return None
    regression = champion - challenger
    if regression <= rollout.max_regression:
        return None
    how = "on average" if statistic == MEAN else f"as a {TRIM_FRACTION:.0%} trimmed mean"
    return (
        f"guard: challenger {rollout.challenger_id} returned {challenger:.1f} {how} over "
        f"{challenger_episodes} live episodes, {regression:.1f} below champion {champion_id}'s {champion:.1f} "
        f"over {champion_episodes} (max_regression {rollout.max_regression:g})"
    )


def promotion_verdict(rollout: Rollout, champion_id: int | None, session: Session) -> str | None:
    """Why the challenger is promoted now, or None: the other half of the guard.

    A canary with `min_improvement` promotes its challenger once both it and the champion have finished `min_episodes`
    live episodes (the champion's counted as in `guard_verdict`) and the challenger's return (the statistic of
    `guard_statistic`) beats the champion's by at least `min_improvement`.
    """
    if rollout.status != "active" or rollout.mode != "canary" or rollout.min_improvement is None:
        return None
    if champion_id is None or rollout.min_episodes is None:
        return None
    statistic, (challenger_episodes, challenger), (champion_episodes, champion) = _live_figures(
        rollout, champion_id, session
    )
    if min(challenger_episodes, champion_episodes) < rollout.min_episodes or challenger is None or champion is None:
        return None
    improvement = challenger - champion
    if improvement < rollout.min_improvement:
        return None
    how = "on average" if statistic == MEAN else f"as a {TRIM_FRACTION:.0%} trimmed mean"
    return (
        f"promoted on live evidence: challenger {rollout.challenger_id} returned {challenger:.1f} {how} over "
        f"{challenger_episodes} live episodes, {improvement:.1f} above champion {champion_id}'s {champion:.1f} over "
        f"{champion_episodes} (min_improvement {rollout.min_improvement:g}, min_episodes {rollout.min_episodes})"
    )


def _verdict(rollout: Rollout, session: Session) -> tuple[str, str] | None:
    """("rolled_back" | "promoted", why) when the live evidence decides the rollout now, else None."""
    champion_id = champion_of(session, rollout.model_id)
    reason = guard_verdict(rollout, champion_id, session)
    if reason is not None:
        return "rolled_back", reason
    reason = promotion_verdict(rollout, champion_id, session)
    return None if reason is None else ("promoted", reason)


def apply_guards(session: Session, rollout_ids: Iterable[int]) -> list[tuple[int, str]]:
    """Roll back every listed rollout whose guard trips, and promote the challenger of every one whose live evidence
    says it is better (`promotion_verdict`); returns (rollout id, reason) of those ended.

    Safe from any number of processes at once: a verdict is read without locks, and only a decided rollout takes the
    registry lock (before the rollout row, the order every registry writer uses) and checks again, so exactly one
    process ends the rollout.
    """
    ended = []
    for rollout_id in sorted(set(rollout_ids) - {NO_ROLLOUT}):
        rollout = session.get(Rollout, rollout_id)
        if rollout is None or _verdict(rollout, session) is None:
            continue
        bump_version(session)
        rollout = session.get(Rollout, rollout_id, with_for_update=True, populate_existing=True)
        verdict = None if rollout is None else _verdict(rollout, session)
        if rollout is None or verdict is None:
            continue
        outcome, reason = verdict
        now = utcnow()
        if outcome == "promoted":
            set_champion(session, rollout.model_id, rollout.challenger_id)  # ends the rollout `promoted`
            session.refresh(rollout)
        rollout.status, rollout.ended_at, rollout.updated_at, rollout.end_reason = outcome, now, now, reason
        ended.append((rollout_id, reason))
    session.flush()
    return ended


def flush(
    session: Session,
    returns: Mapping[tuple[int, int], ReturnSums],
    shadow: Mapping[int, ShadowSums],
    *,
    flush_id: str | None = None,
) -> list[tuple[int, str]]:
    """One API process's batch: add its sums, apply the guards they concern, commit. Returns the rollbacks.

    With a `flush_id`, a batch whose id is stored already (its earlier attempt committed) adds nothing.
    """
    try:
        if flush_id is not None and not _first_attempt_to_land(session, flush_id):
            session.rollback()
            return []
        add_returns(session, returns)
        add_shadow(session, shadow)
        rolled_back = apply_guards(session, (rollout_id for rollout_id, _policy in returns))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return rolled_back


def _first_attempt_to_land(session: Session, flush_id: str) -> bool:
    """Record the flush id (False: it is recorded already), and delete ids older than FLUSH_IDS_KEPT_FOR.

    The deletion skips rows another process is deleting (SKIP LOCKED on PostgreSQL; SQLite has one writer), so
    concurrent flushes never wait on each other for it.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    expired = (
        select(LiveReturnFlush.flush_id)
        .where(LiveReturnFlush.created_at < now - FLUSH_IDS_KEPT_FOR)
        .limit(_PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    session.execute(delete(LiveReturnFlush).where(LiveReturnFlush.flush_id.in_(expired)))
    statement = insert(LiveReturnFlush).values(flush_id=flush_id, created_at=now).on_conflict_do_nothing()
    # RETURNING, not the row count (which psycopg does not report as 0 for a skipped conflict).
    return session.execute(statement.returning(LiveReturnFlush.flush_id)).first() is not None


def first_attempt_to_land(session: Session, flush_id: str) -> bool:
    """Record any batch's flush id in this transaction (False: a batch of that id landed already). Also used by the
    flushes of recorded experience that carry no chunk (store.experience), whose chunks' own ids cannot say so."""
    return _first_attempt_to_land(session, flush_id)
