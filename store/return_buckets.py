"""Live returns per bucket of a fixed logarithmic scale, and the trimmed mean the rollout guard reads from them.

Why buckets: the guard's figures are sums written by every API process, and a mean of sums is moved without bound
by one episode (a session that sends `"reward": -3.4e38` once). A trimmed mean (the lowest and the highest
TRIM_FRACTION of episodes dropped, at least one each side) is not, but needs the order of the returns, and the
processes share nothing but additions to rows. So each episode also adds (1, return) to the row of its bucket:
buckets are ordered like the returns, so the trimmed mean is read off the rows, exact except in the two buckets
where the trimming cuts, which count at their own mean (within a bucket returns differ by at most BUCKET_RATIO).
The rows stay bounded: at most 2 x 14,551 per (rollout, policy) for any float64, about 20 for Pendulum's returns.
It is the simplest design that stays additive (so batched, exactly-once writes still apply) and mergeable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.tables.serving_records import LiveReturnBucket

# Consecutive bucket bounds differ by 5%; |return| < 1 is bucket 0.
BUCKET_RATIO = 1.05
_LOG_RATIO = math.log(BUCKET_RATIO)
# Dropped from each end before averaging: 10% of the episodes, rounded up (so at least one each side).
TRIM_FRACTION = 0.1

# (rollout_id, policy_id, bucket) -> [episodes, sum of returns]
BucketSums = Mapping[tuple[int, int, int], tuple[int, float]]


def bucket_of(episode_return: float) -> int:
    """The bucket of a return: ordered like the returns (-k is below -k+1), sign x (1 + floor(log_1.05 |x|))."""
    magnitude = abs(episode_return)
    if magnitude < 1.0:
        return 0
    index = 1 + int(math.log(magnitude) / _LOG_RATIO)
    return index if episode_return > 0 else -index


def add_buckets(session: Session, sums: BucketSums) -> None:
    """Add episode counts and return sums per bucket, in key order (as store.live_returns.add_returns)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for (rollout_id, policy_id, bucket), (episodes, total) in sorted(sums.items()):
        statement = insert(LiveReturnBucket).values(
            policy_id=policy_id, rollout_id=rollout_id, bucket=bucket, episodes=episodes, return_sum=total
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[LiveReturnBucket.policy_id, LiveReturnBucket.rollout_id, LiveReturnBucket.bucket],
                set_={
                    "episodes": LiveReturnBucket.episodes + statement.excluded.episodes,
                    "return_sum": LiveReturnBucket.return_sum + statement.excluded.return_sum,
                },
            )
        )


def trimmed_mean(rows: Sequence[tuple[int, float]]) -> float | None:
    """The trimmed mean of the episodes in `rows` ((episodes, sum) per bucket, in bucket order); None when trimming
    leaves nothing (fewer than three episodes). Summed over the kept episodes only: subtracting the dropped ones
    from the total would lose the others' digits next to a huge one."""
    counts = [count for count, _total in rows]
    episodes = sum(counts)
    trim = math.ceil(TRIM_FRACTION * episodes)
    kept = episodes - 2 * trim
    if kept < 1:
        return None
    from_low, from_high = _dropped(counts, trim), _dropped(counts[::-1], trim)[::-1]
    kept_sum = 0.0
    for (count, total), low, high in zip(rows, from_low, from_high, strict=True):
        keep = count - low - high
        if keep > 0:
            kept_sum += total if keep == count else total / count * keep  # a cut bucket counts at its mean
    return kept_sum / kept


def _dropped(counts: Sequence[int], trim: int) -> list[int]:
    """How many episodes of each bucket the first `trim` episodes take."""
    dropped, left = [], trim
    for count in counts:
        take = min(count, max(left, 0))
        dropped.append(take)
        left -= take
    return dropped


def trimmed_means(session: Session, rollout_id: int, policy_ids: Sequence[int]) -> dict[int, float | None]:
    """The trimmed mean live return of each policy under the rollout (None: too few episodes)."""
    rows: dict[int, list[tuple[int, float]]] = {policy_id: [] for policy_id in policy_ids}
    for row in session.scalars(
        select(LiveReturnBucket)
        .where(LiveReturnBucket.rollout_id == rollout_id, LiveReturnBucket.policy_id.in_(list(policy_ids)))
        .order_by(LiveReturnBucket.policy_id, LiveReturnBucket.bucket)
    ):
        rows[row.policy_id].append((row.episodes, row.return_sum))
    return {policy_id: trimmed_mean(found) for policy_id, found in rows.items()}
