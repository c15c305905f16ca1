"""Prometheus metrics of one API process, and the pure-ASGI middleware that records every request.

Pure ASGI rather than BaseHTTPMiddleware: the latter wraps each request in extra tasks and streams, which
would cost /act a visible share of its throughput. Per-request values are app.infra.loop_metrics counters and
histograms with cached label children, so recording a request is a few integer additions. Routes are labelled
by their template (`/jobs/{job_id}`), and unmatched paths by one constant, so clients cannot blow up the label
cardinality.

Several uvicorn worker processes: when PROMETHEUS_MULTIPROC_DIR is set (`python -m app` sets it for
WORKERS > 1), every process shares its values through files there (prometheus_client's for the gauges,
app.infra.loop_metrics' snapshots for the rest), and /metrics aggregates all processes, so a scrape sees the whole
server and not whichever worker answered.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.infra.loop_metrics import LoopCounter, LoopCounterChild, LoopHistogram, LoopHistogramChild, ProcessSnapshots

UNMATCHED_ROUTE = "<unmatched>"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 16384)
# |champion - challenger| of one action dimension: from exact agreement to across a typical action range.
_DIVERGENCE_BUCKETS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
_SHADOW_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY_NAME = "http_request_duration_seconds"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger(__name__)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


class Metrics:
    """The metric families of one app instance, in their own registry (so several apps in one test process
    do not collide)."""

    def __init__(self) -> None:
        # The `_created` timestamp series double the exposition for no use here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        request_labels = ["method", "route", "status"]
        requests_doc = "HTTP requests by method, route template and status."
        latency_doc = "HTTP request latency by method, route template and status."
        batch_doc = "Observations per successful POST /act request."
        # Per-request values as plain integer additions (app.infra.loop_metrics), the same families as
        # prometheus_client's Counter and Histogram at a fraction of the cost on the hot path.
        self.requests = LoopCounter("http_requests", requests_doc, request_labels)
        self.latency = LoopHistogram(LATENCY_NAME, latency_doc, request_labels, buckets=_LATENCY_BUCKETS)
        self.act_batch_size = LoopHistogram("act_batch_size", batch_doc, buckets=_BATCH_BUCKETS)
        # Models, sessions and rollouts (app.serving.routed_act, sessions, shadow).
        self.routed = LoopCounter(
            "act_routed", "POST /act requests by model and rollout side (champion, challenger).", ["model", "arm"]
        )
        self.sessions_started = LoopCounter("act_sessions_started", "Episodes started in sessions.", ["model"])
        self.sessions_dropped = LoopCounter(
            "act_sessions_dropped",
            "Sessions dropped before their episode ended: idle past SESSION_IDLE_SECONDS (expired) or pushed out "
            "by MAX_SESSIONS (evicted).",
            ["reason"],
        )
        self.episodes_finished = LoopCounter(
            "act_episodes_finished",
            "Session episodes ended (`done` or `truncated`), by model and policy.",
            ["model", "policy_id"],
        )
        self.shadow_divergence = LoopHistogram(
            "shadow_divergence",
            "Shadow rollouts: |champion action - challenger action| per action dimension.",
            ["model", "dim"],
            buckets=_DIVERGENCE_BUCKETS,
        )
        self.shadow_latency = LoopHistogram(
            "shadow_latency_seconds",
            "Shadow rollouts: seconds from the champion's answer to the challenger's action (batched off the answer).",
            ["model"],
            buckets=_SHADOW_LATENCY_BUCKETS,
        )
        self.shadow_dropped = LoopCounter(
            "shadow_dropped", "Shadow samples dropped because the shadow queue was full.", ["model"]
        )
        self.experience_recorded = LoopCounter(
            "experience_recorded_transitions", "Session steps recorded as transitions, by model.", ["model"]
        )
        self.experience_dropped = LoopCounter(
            "experience_dropped_transitions",
            "Transitions not recorded: the buffer was full (buffer_full), the session was dropped or closed before "
            "its next observation (session_dropped), or a flush was refused by the store (write_failed).",
            ["model", "reason"],
        )
        self.experience_flushes = LoopCounter(
            "experience_flushes", "Experience flushes by outcome (written, failed).", ["outcome"]
        )
        loop_metrics = (
            self.experience_recorded,
            self.experience_dropped,
            self.experience_flushes,
            self.requests,
            self.latency,
            self.act_batch_size,
            self.routed,
            self.sessions_started,
            self.sessions_dropped,
            self.episodes_finished,
            self.shadow_divergence,
            self.shadow_latency,
            self.shadow_dropped,
        )
        self.snapshots: ProcessSnapshots | None = None
        if multiprocess_mode():
            self.snapshots = ProcessSnapshots(Path(os.environ[MULTIPROC_DIR_ENV]), loop_metrics)
        else:
            for collector in loop_metrics:
                self.registry.register(collector)
        # Across processes: every process reads the same job counts (max), and the policy id most recently
        # recorded by a live process wins (a scrape sets it just before exposing).
        self.jobs = Gauge(
            "training_jobs",
            "Training jobs by state (read at scrape time).",
            ["status"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.default_policy_id = Gauge(
            "default_policy_id",
            "The default policy this process serves (0: none loaded).",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.live_sessions = Gauge(
            "act_sessions_live",
            "Sessions with an episode in progress (summed over worker processes).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # From the database at scrape time (every process's finished episodes): the same figures in any process.
        live_labels = ["model", "policy_id", "rollout_id"]
        self.live_episodes = Gauge(
            "live_return_episodes",
            "Finished live episodes of a policy (rollout_id 0: outside any rollout).",
            live_labels,
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.live_return_mean = Gauge(
            "live_return_mean",
            "Mean return of a policy's finished live episodes.",
            live_labels,
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.live_return_ci95 = Gauge(
            "live_return_ci95",
            "Half-width of the 95% confidence interval of live_return_mean.",
            live_labels,
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self._children: dict[tuple[str, str, int], tuple[LoopCounterChild, LoopHistogramChild]] = {}

    def exposition(self) -> bytes:
        """The text format of every metric: of all worker processes in multiprocess mode, else of this one."""
        if self.snapshots is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(self.snapshots)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def write_snapshot(self) -> None:
        """Multiprocess mode: publish this process's per-request values to the other workers' scrapes."""
        if self.snapshots is not None:
            self.snapshots.write()

    def process_exiting(self) -> None:
        """Publish the final values and drop this process's live gauges from the aggregate (multiprocess mode)."""
        if self.snapshots is not None:
            try:
                self.snapshots.write()
            except OSError as exc:
                logger.warning("could not write the final metrics snapshot: %s", exc)
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and final status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            # The router stores the matched route in the (shared) scope dict.
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - start)
