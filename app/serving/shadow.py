"""Shadow comparisons: the challenger acts on the same observations as the champion, out of the answer's way.

/act answers with the champion and, for a sampled share of requests, appends (observations, champion actions) to a
bounded queue: a tuple append, nothing computed. A background task drains the queue every SHADOW_INTERVAL_SECONDS
and runs the challenger on everything queued for it as one batch (one numpy forward pass instead of one call per
request), then records per action dimension |champion - challenger| and the shadow's latency (from the champion's
answer to the challenger's action) in /metrics and, summed, in the rollout's record. When the queue is full a
sample is dropped and counted rather than slowing anyone down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from app.infra.metrics import Metrics
from app.serving.live_returns import LiveReturns

if TYPE_CHECKING:
    from app.serving.policy_cache import LoadedPolicy

logger = logging.getLogger(__name__)

SHADOW_INTERVAL_SECONDS = 0.02
# Per-dimension divergence series beyond this many action dimensions are not labelled separately (cardinality).
MAX_LABELLED_DIMS = 8


@dataclass(frozen=True, slots=True)
class _Sample:
    model: str
    rollout_id: int
    challenger: LoadedPolicy
    observations: Any  # float32 (obs_dim,) or (n, obs_dim)
    champion_actions: Any  # list of floats, or an (n, act_dim) array
    answered_at: float


class ShadowComparisons:
    """The queue of shadow samples of this process and the task that works it off (event-loop only)."""

    def __init__(self, metrics: Metrics, live: LiveReturns, *, capacity: int) -> None:
        self._metrics = metrics
        self._live = live
        self._queue: deque[_Sample] = deque()
        self.capacity = capacity
        self.compared = 0

    def submit(
        self, model: str, rollout_id: int, challenger: LoadedPolicy, observations: Any, champion_actions: Any
    ) -> None:
        """Queue one request's observations and the champion's answer for the challenger (or drop it when full)."""
        if len(self._queue) >= self.capacity:
            self._metrics.shadow_dropped.labels(model).inc()
            return
        self._queue.append(_Sample(model, rollout_id, challenger, observations, champion_actions, time.perf_counter()))

    def drain(self) -> int:
        """Compare everything queued now; returns how many requests were compared."""
        if not self._queue:
            return 0
        samples = list(self._queue)
        self._queue.clear()
        groups: dict[tuple[str, int, int], list[_Sample]] = {}
        for sample in samples:
            groups.setdefault((sample.model, sample.rollout_id, sample.challenger.policy_id), []).append(sample)
        for (model, rollout_id, _policy), group in groups.items():
            self._compare(model, rollout_id, group)
        self.compared += len(samples)
        return len(samples)

    def _compare(self, model: str, rollout_id: int, group: list[_Sample]) -> None:
        observations = np.concatenate([np.atleast_2d(s.observations) for s in group])
        champion = np.concatenate([np.atleast_2d(np.asarray(s.champion_actions, dtype=np.float64)) for s in group])
        challenger = np.asarray(group[0].challenger.actor.act(observations), dtype=np.float64)
        done_at = time.perf_counter()
        divergence = np.abs(champion - challenger)  # (n, act_dim)
        divergence_histograms = [
            self._metrics.shadow_divergence.labels(model, str(dim))
            for dim in range(min(divergence.shape[1], MAX_LABELLED_DIMS))
        ]
        latency = self._metrics.shadow_latency.labels(model)
        latency_sum = 0.0  # over observations, as the divergence is, so the record's means share one denominator
        for sample in group:
            seconds = done_at - sample.answered_at
            latency.observe(seconds)
            latency_sum += seconds * (1 if np.ndim(sample.observations) == 1 else len(sample.observations))
        for row in divergence.tolist():
            for histogram, value in zip(divergence_histograms, row, strict=False):
                histogram.observe(value)
        self._live.shadow(rollout_id, len(divergence), float(divergence.mean(axis=1).sum()), latency_sum)

    async def run(self, interval: float = SHADOW_INTERVAL_SECONDS) -> None:
        """Drain the queue every `interval` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.drain()
            except Exception:  # a bad sample must not end shadowing for good
                logger.exception("shadow comparison failed")
