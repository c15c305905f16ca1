"""Shadow comparisons: the challenger acts on the same observations as the champion, out of the answer's way.

/act answers with the champion and, for a sampled share of requests, appends (observations, champion actions) to a
bounded queue: one tuple append, nothing computed. A background task drains the queue every SHADOW_INTERVAL_SECONDS
and runs the challenger on everything queued for it as one batch (one numpy forward pass instead of one call per
request), then records per action dimension |champion - challenger| and the shadow's latency (from the champion's
answer to the challenger's action) in /metrics and, summed, in the rollout's record. Counting is vectorised too:
measured in-process, a per-sample Python loop here cost more than the request's own forward pass. When the queue
is full a sample is dropped and counted rather than slowing anyone down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from app.infra.metrics import Metrics
from app.serving.live_returns import LiveReturns

if TYPE_CHECKING:
    from app.serving.served_models import ActiveRollout

logger = logging.getLogger(__name__)

SHADOW_INTERVAL_SECONDS = 0.02
# Per-dimension divergence series beyond this many action dimensions are not labelled separately (cardinality).
MAX_LABELLED_DIMS = 8

# (model name, rollout, observations: float32 (obs_dim,) or (n, obs_dim), champion actions: list or (n, act_dim)
# array, perf_counter when answered). A plain tuple: the cheapest thing to build on the request's path.
Sample = tuple[str, "ActiveRollout", Any, Any, float]


class ShadowComparisons:
    """The queue of shadow samples of this process and the task that works it off (event-loop only)."""

    def __init__(self, metrics: Metrics, live: LiveReturns, *, capacity: int) -> None:
        self._metrics = metrics
        self._live = live
        self._queue: deque[Sample] = deque()
        self.capacity = capacity
        self.compared = 0

    def submit(self, model: str, rollout: ActiveRollout, observations: Any, champion_actions: Any) -> None:
        """Queue one request's observations and the champion's answer for the challenger (or drop it when full)."""
        if len(self._queue) >= self.capacity:
            self._metrics.shadow_dropped.labels(model).inc()
            return
        self._queue.append((model, rollout, observations, champion_actions, time.perf_counter()))

    def drain(self) -> int:
        """Compare everything queued now; returns how many requests were compared."""
        if not self._queue:
            return 0
        samples = list(self._queue)
        self._queue.clear()
        groups: dict[tuple[str, int, int], list[Sample]] = {}
        for sample in samples:
            rollout = sample[1]
            groups.setdefault((sample[0], rollout.rollout_id, rollout.challenger.policy_id), []).append(sample)
        for (model, rollout_id, _policy), group in groups.items():
            self._compare(model, rollout_id, group)
        self.compared += len(samples)
        return len(samples)

    def _compare(self, model: str, rollout_id: int, group: list[Sample]) -> None:
        # One observation per request (the common case) is answered with a list of floats, a batch with an array.
        if all(type(sample[3]) is list for sample in group):
            observations = np.array([sample[2] for sample in group])
            champion = np.array([sample[3] for sample in group], dtype=np.float64)
            per_request = np.ones(len(group))
        else:
            observations = np.concatenate([np.atleast_2d(sample[2]) for sample in group])
            champion = np.concatenate([np.atleast_2d(np.asarray(sample[3], dtype=np.float64)) for sample in group])
            per_request = np.array([1 if np.ndim(sample[2]) == 1 else len(sample[2]) for sample in group], float)
        challenger = np.asarray(group[0][1].challenger.actor.act(observations), dtype=np.float64)
        done_at = time.perf_counter()
        divergence = np.abs(champion - challenger)  # (n, act_dim)
        for dim in range(min(divergence.shape[1], MAX_LABELLED_DIMS)):
            self._metrics.shadow_divergence.labels(model, str(dim)).observe_many(divergence[:, dim])
        latencies = done_at - np.array([sample[4] for sample in group])
        self._metrics.shadow_latency.labels(model).observe_many(latencies)
        # Over observations, as the divergence is, so the rollout record's means share one denominator.
        latency_sum = float((latencies * per_request).sum())
        self._live.shadow(rollout_id, len(divergence), float(divergence.mean(axis=1).sum()), latency_sum)

    async def run(self, interval: float = SHADOW_INTERVAL_SECONDS) -> None:
        """Drain the queue every `interval` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.drain()
            except Exception:  # a bad sample must not end shadowing for good
                logger.exception("shadow comparison failed")
