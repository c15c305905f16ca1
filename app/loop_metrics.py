"""Counters and histograms written from the event loop at the cost of integer additions, read at scrape time.

Why not prometheus_client's Counter and Histogram on every request: each `inc`/`observe` takes a lock per value
and walks Python-level checks; measured under the server (bench/serve_bench.py, issue 5), the batch-size
histogram alone cost POST /act about 2 microseconds, 5% of its throughput. Here a request adds to plain ints,
and a custom collector turns them into the same metric families when /metrics is scraped.

Only for values written from the event loop thread (ASGI middleware, `async def` endpoints): plain `+=` is not
atomic across threads. In multiprocess mode (several uvicorn workers) values must live in prometheus_client's
shared files instead, so `app.metrics` uses its Counter and Histogram there; both expose the same families.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


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


class _LoopMetric(Collector):
    """Label children by value tuple; with no label names, the metric itself is its only child."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def describe(self) -> Iterable[Metric]:
        # An empty family of the right names, so registering does not call collect (nothing to read yet).
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_LoopMetric):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._children: dict[tuple[str, ...], LoopCounterChild] = {}
        self._unlabelled = LoopCounterChild()

    def labels(self, *values: str) -> LoopCounterChild:
        return self._children.setdefault(tuple(values), LoopCounterChild())

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled.inc(amount)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        children = list(self._children.items()) if self.labelnames else [((), self._unlabelled)]
        for values, child in children:
            family.add_metric(list(values), child.value)
        yield family


class LoopHistogram(_LoopMetric):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._children: dict[tuple[str, ...], LoopHistogramChild] = {}
        self._unlabelled = LoopHistogramChild(self._bounds)

    def labels(self, *values: str) -> LoopHistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[tuple(values)] = LoopHistogramChild(self._bounds)
        return child

    def observe(self, amount: float) -> None:
        self._unlabelled.observe(amount)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        children = list(self._children.items()) if self.labelnames else [((), self._unlabelled)]
        upper = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for values, child in children:
            cumulative, buckets = 0, []
            for le, count in zip(upper, list(child.counts), strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        yield family
