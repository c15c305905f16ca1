"""Live returns and shadow figures of one API process, summed in memory and written to the database in batches.

/act never waits on the database: a finished episode adds to a dict entry keyed by (rollout, policy) (count, sum,
sum of squares, and the count and sum of its return's bucket), a shadow comparison three numbers keyed by rollout.
A lifespan task writes the sums every LIVE_STATS_FLUSH_SECONDS in one transaction (store.live_returns.flush), which
also applies the rollout guards; when the guard rolls a rollout back, the policy cache refreshes at once so this
process stops routing to the challenger.

Exactly once: each batch gets an id (this process's and a sequence number). A write that fails may still have
committed (the COMMIT's reply lost), so the batch is kept whole, with its id, and written again before anything
newer; the store adds a batch whose id it already holds only once. Episodes that finish meanwhile wait in the next
batch (the dicts hold one entry per pair, so they stay small while the database is away).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from store.live_returns import ReturnSums, ShadowSums
from store.return_buckets import bucket_of

logger = logging.getLogger(__name__)

# Writes one batch under its id (returns by (rollout_id, policy_id), shadow by rollout_id); returns the rollbacks.
WriteBatch = Callable[[str, Mapping[tuple[int, int], ReturnSums], Mapping[int, ShadowSums]], list[tuple[int, str]]]


@dataclass(slots=True)
class _Returns:
    """One (rollout, policy)'s pending episodes: count, sum, sum of squares, and (count, sum) per bucket."""

    episodes: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    buckets: defaultdict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))

    def add(self, episode_return: float) -> None:
        self.episodes += 1
        self.total += episode_return
        self.total_sq += episode_return * episode_return
        bucket = self.buckets[bucket_of(episode_return)]
        bucket[0] += 1
        bucket[1] += episode_return

    def sums(self) -> ReturnSums:
        buckets = tuple((key, int(count), total) for key, (count, total) in sorted(self.buckets.items()))
        return ReturnSums(self.episodes, self.total, self.total_sq, buckets)


@dataclass(frozen=True, slots=True)
class _Batch:
    flush_id: str
    returns: dict[tuple[int, int], ReturnSums]
    shadow: dict[int, ShadowSums]


class LiveReturns:
    """Pending sums of this process (event-loop only: nothing is locked)."""

    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._returns: dict[tuple[int, int], _Returns] = {}
        # [samples, divergence, latency] by rollout_id.
        self._shadow: dict[int, list[float]] = {}
        # A batch whose write failed: written again, under the same id, before anything newer.
        self._unconfirmed: _Batch | None = None
        # Unique across processes, machines and restarts: the pid for people, random bits for uniqueness.
        self._id_prefix = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._sequence = itertools.count(1)
        self.flushes = 0
        self.failed_flushes = 0

    def episode(self, rollout_id: int, policy_id: int, episode_return: float) -> None:
        sums = self._returns.get((rollout_id, policy_id))
        if sums is None:
            sums = self._returns[(rollout_id, policy_id)] = _Returns()
        sums.add(episode_return)

    def shadow(self, rollout_id: int, samples: int, divergence: float, latency: float) -> None:
        sums = self._shadow.get(rollout_id)
        if sums is None:
            self._shadow[rollout_id] = [samples, divergence, latency]
            return
        sums[0] += samples
        sums[1] += divergence
        sums[2] += latency

    @property
    def pending(self) -> bool:
        return bool(self._unconfirmed or self._returns or self._shadow)

    async def flush(self) -> list[tuple[int, str]]:
        """Write the unconfirmed batch, if any, then what is pending (each in a thread); on failure keep the batch
        for the next flush. Returns the rollbacks."""
        rolled_back: list[tuple[int, str]] = []
        # At most two writes (a retried batch, then the newer sums), so that steady traffic cannot hold one flush.
        for _attempt in range(2):
            if self._unconfirmed is None and (self._returns or self._shadow):
                self._unconfirmed = self._next_batch()
            batch = self._unconfirmed
            if batch is None:
                break
            try:
                rolled_back += await asyncio.to_thread(self._write, batch.flush_id, batch.returns, batch.shadow)
            except Exception as exc:
                self.failed_flushes += 1
                logger.warning(
                    "cannot write live returns batch %s (kept for the next attempt): %s", batch.flush_id, exc
                )
                break
            self.flushes += 1
            self._unconfirmed = None
        for rollout_id, reason in rolled_back:
            logger.warning("rollout %d ended: %s", rollout_id, reason)
        return rolled_back

    def _next_batch(self) -> _Batch:
        """What is pending, as a batch with a new id; the pending sums start again empty."""
        returns = {key: sums.sums() for key, sums in self._returns.items()}
        shadow = {key: ShadowSums(int(v[0]), v[1], v[2]) for key, v in self._shadow.items()}
        self._returns, self._shadow = {}, {}
        return _Batch(f"{self._id_prefix}-{next(self._sequence)}", returns, shadow)

    async def run(self, interval: float, on_rollback: Callable[[], Awaitable[None]]) -> None:
        """Flush every `interval` seconds (a lifespan task); after a rollback, `on_rollback` (a cache refresh)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.flush():
                    await on_rollback()
            except Exception:  # the flusher must outlive any one bad batch
                logger.exception("live returns flush failed")
