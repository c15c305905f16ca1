"""Counters and histograms written from the event loop at the cost of integer additions, read at scrape time.

Why not prometheus_client's Counter and Histogram on every request: each `inc`/`observe` takes a lock per value
and walks Python-level checks (in multiprocess mode it also packs into a memory-mapped file); measured under the
server (bench/serve_bench.py), the batch-size histogram alone cost POST /act about 2 microseconds, 5% of
its throughput, and the multiprocess request metrics 4 microseconds a request. Here a request adds to plain ints
and a collector turns them into the same metric families when /metrics is scraped.

Only for values written from the event loop thread (ASGI middleware, `async def` endpoints): plain `+=` is not
atomic across threads.

Several worker processes (`ProcessSnapshots`): each process writes its cumulative values to a small JSON file in
the shared directory every second and when it stops; a scrape adds every other process's last file to its own
live values. Another worker's counts can be up to a second old, which a Prometheus scrape interval (15 s and up)
does not notice; a worker that dies without stopping loses at most its last second.
"""

from __future__ import annotations

import json
import logging
import os
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)

# One process's values of one metric, as JSON: [[label values], value] for a counter, [[label values], per-bucket
# counts, sum] for a histogram.
State = list[list[Any]]


class LoopCounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopHistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bucket whose upper bound is >= amount, as `le` means.
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount

    def observe_many(self, amounts: npt.NDArray[np.float64]) -> None:
        """observe() of every value, the bucket search and counting done by numpy (for values counted in batches)."""
        # side="left" is bisect_left: a value equal to a bound falls in that bound's bucket.
        buckets = np.bincount(np.searchsorted(self._bounds, amounts, side="left"), minlength=len(self.counts))
        for index, count in enumerate(buckets.tolist()):
            self.counts[index] += count
        self.sum += float(amounts.sum())


Child = TypeVar("Child", LoopCounterChild, LoopHistogramChild)


class _LoopMetric(Collector, Generic[Child]):
    """Label children by value tuple (with no label names, the one child has the empty tuple); exposition from
    `state` (this process's values) and `family` (any number of processes' states, summed)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {} if labelnames else {(): self._new_child()}

    def _new_child(self) -> Child:
        raise NotImplementedError

    def labels(self, *values: str) -> Child:
        child = self._children.get(values)
        if child is None:
            child = self._children[tuple(values)] = self._new_child()
        return child

    def state(self) -> State:
        raise NotImplementedError

    def family(self, states: Iterable[State]) -> Metric:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        # An empty family of the right name: registering checks names without reading any values.
        return [self.family([])]

    def collect(self) -> Iterable[Metric]:
        yield self.family([self.state()])


class LoopCounter(_LoopMetric[LoopCounterChild]):
    def _new_child(self) -> LoopCounterChild:
        return LoopCounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._children[()].inc(amount)

    def state(self) -> State:
        return [[list(values), child.value] for values, child in list(self._children.items())]

    def family(self, states: Iterable[State]) -> CounterMetricFamily:
        totals: dict[tuple[str, ...], float] = {}
        for state in states:
            for values, value in state:
                key = tuple(values)
                totals[key] = totals.get(key, 0.0) + value
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, total in totals.items():
            family.add_metric(list(key), total)
        return family


class LoopHistogram(_LoopMetric[LoopHistogramChild]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        self._bounds = tuple(sorted(float(b) for b in buckets))
        super().__init__(name, documentation, labelnames)

    def _new_child(self) -> LoopHistogramChild:
        return LoopHistogramChild(self._bounds)

    def observe(self, amount: float) -> None:
        self._children[()].observe(amount)

    def state(self) -> State:
        return [[list(values), list(child.counts), child.sum] for values, child in list(self._children.items())]

    def family(self, states: Iterable[State]) -> HistogramMetricFamily:
        totals: dict[tuple[str, ...], tuple[list[int], float]] = {}
        for state in states:
            for values, counts, total in state:
                key = tuple(values)
                summed, summed_total = totals.get(key, ([0] * len(counts), 0.0))
                totals[key] = ([a + b for a, b in zip(summed, counts, strict=True)], summed_total + total)
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        upper = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, (counts, total) in totals.items():
            cumulative, buckets = 0, []
            for le, count in zip(upper, counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(key), buckets, total)
        return family


LoopMetric = LoopCounter | LoopHistogram


class ProcessSnapshots(Collector):
    """Loop metrics summed over the worker processes that share `directory` (see the module docstring)."""

    PREFIX = "loop_metrics_"

    def __init__(self, directory: Path, metrics: Sequence[LoopMetric]) -> None:
        self.directory = directory
        self.metrics = metrics
        self.path = directory / f"{self.PREFIX}{os.getpid()}.json"

    def write(self) -> None:
        """This process's cumulative values, replacing its previous file atomically (readers never see half)."""
        payload = json.dumps({metric.name: metric.state() for metric in self.metrics})
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(payload)
        os.replace(temporary, self.path)

    def _other_processes(self) -> list[dict[str, State]]:
        snapshots = []
        for path in self.directory.glob(f"{self.PREFIX}*.json"):
            if path == self.path:
                continue  # this process counts from its live values
            try:
                snapshots.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:  # removed meanwhile, or not ours: one bad file must not stop a scrape
                logger.warning("skipping metrics snapshot %s: %s", path.name, exc)
        return snapshots

    def describe(self) -> Iterable[Metric]:
        return [metric.family([]) for metric in self.metrics]

    def collect(self) -> Iterable[Metric]:
        others = self._other_processes()
        for metric in self.metrics:
            yield metric.family([metric.state(), *(other.get(metric.name, []) for other in others)])
