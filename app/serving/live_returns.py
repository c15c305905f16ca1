"""Live returns and shadow figures of one API process, summed in memory and written to the database in batches.

/act never waits on the database: a finished episode adds three numbers to a dict entry keyed by (rollout, policy),
a shadow comparison three more keyed by rollout. A lifespan task writes the sums every LIVE_STATS_FLUSH_SECONDS in
one transaction (store.live_returns.flush), which also applies the rollout guards; when the guard rolls a rollout
back, the policy cache refreshes at once so this process stops routing to the challenger. A failed write keeps the
sums for the next attempt (the dicts hold one entry per pair, so they stay small while the database is away).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from store.live_returns import ReturnSums, ShadowSums

logger = logging.getLogger(__name__)

# Writes one batch (returns by (rollout_id, policy_id), shadow by rollout_id); returns the rollbacks it caused.
WriteBatch = Callable[[Mapping[tuple[int, int], ReturnSums], Mapping[int, ShadowSums]], list[tuple[int, str]]]


class LiveReturns:
    """Pending sums of this process (event-loop only: nothing is locked)."""

    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        # [episodes, sum, sum of squares] by (rollout_id, policy_id); [samples, divergence, latency] by rollout_id.
        self._returns: dict[tuple[int, int], list[float]] = {}
        self._shadow: dict[int, list[float]] = {}
        self.flushes = 0
        self.failed_flushes = 0

    def episode(self, rollout_id: int, policy_id: int, episode_return: float) -> None:
        sums = self._returns.get((rollout_id, policy_id))
        if sums is None:
            self._returns[(rollout_id, policy_id)] = [1, episode_return, episode_return * episode_return]
            return
        sums[0] += 1
        sums[1] += episode_return
        sums[2] += episode_return * episode_return

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
        return bool(self._returns or self._shadow)

    async def flush(self) -> list[tuple[int, str]]:
        """Write what is pending (in a thread); on failure keep it for the next flush. Returns the rollbacks."""
        if not self.pending:
            return []
        returns, shadow = self._returns, self._shadow
        self._returns, self._shadow = {}, {}
        batch_returns = {key: ReturnSums(int(v[0]), v[1], v[2]) for key, v in returns.items()}
        batch_shadow = {key: ShadowSums(int(v[0]), v[1], v[2]) for key, v in shadow.items()}
        try:
            rolled_back = await asyncio.to_thread(self._write, batch_returns, batch_shadow)
        except Exception as exc:
            self.failed_flushes += 1
            logger.warning("cannot write live returns (kept for the next attempt): %s", exc)
            for (rollout_id, policy_id), add in batch_returns.items():
                self._merge_returns(rollout_id, policy_id, add)
            for rollout_id, shadow_add in batch_shadow.items():
                self.shadow(rollout_id, shadow_add.samples, shadow_add.divergence, shadow_add.latency)
            return []
        self.flushes += 1
        for rollout_id, reason in rolled_back:
            logger.warning("rollout %d rolled back: %s", rollout_id, reason)
        return rolled_back

    def _merge_returns(self, rollout_id: int, policy_id: int, add: ReturnSums) -> None:
        sums = self._returns.setdefault((rollout_id, policy_id), [0, 0.0, 0.0])
        sums[0] += add.episodes
        sums[1] += add.total
        sums[2] += add.total_sq

    async def run(self, interval: float, on_rollback: Callable[[], Awaitable[None]]) -> None:
        """Flush every `interval` seconds (a lifespan task); after a rollback, `on_rollback` (a cache refresh)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.flush():
                    await on_rollback()
            except Exception:  # the flusher must outlive any one bad batch
                logger.exception("live returns flush failed")
