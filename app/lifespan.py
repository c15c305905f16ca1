"""What one API process does between start and stop: database, policy cache, background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.grpc_oip.server import serving_grpc
from app.infra.control_threads import ControlThreads
from app.infra.database import Database, redacted
from app.infra.metrics import Metrics
from app.jobs.event_hub import JobEventHub
from app.jobs.events import job_events_reader
from app.services.policy_files import PolicyFiles
from app.serving.experience import ExperienceRecorder
from app.serving.live_returns import LiveReturns
from app.serving.policy_cache import PolicyCache, running_refresher
from app.serving.routing import Routing
from app.serving.runtime import ActRuntime
from app.serving.sessions import SessionTable
from app.serving.shadow import ShadowComparisons
from app.settings import Settings
from models.fused import forward_one_kernel
from models.weights import load_actor_file
from store.chunk_storage import open_chunk_storage
from store.jobs import expire_stale_leases
from store.sweeps import expire_stale_sweep_leases

logger = logging.getLogger(__name__)

# Several workers: how often each publishes its per-request metrics to the others' scrapes (app.infra.loop_metrics).
METRICS_SNAPSHOT_SECONDS = 1.0
# How often idle sessions are looked for: a small fraction of any sensible SESSION_IDLE_SECONDS.
SESSION_EXPIRY_SECONDS = 1.0


async def _expire_stale_leases(database: Database, interval_seconds: float) -> None:
    """Every `interval_seconds` (LEASE_EXPIRY_CHECK_SECONDS): end the jobs and sweeps whose worker or runner stopped
    renewing its lease. Workers expire each other's stale leases; the API does it too, so a job whose only worker
    died still ends `failed` with its reason even when no worker is left. Rare enough to cost nothing."""
    while True:
        await asyncio.sleep(interval_seconds)
        if not database.prepared.is_set():
            continue

        def expire() -> tuple[list[int], list[int]]:
            with database.sessions() as session:
                # Hyperparameter sweeps too: a sweep whose only runner died must still end, with the reason.
                return expire_stale_leases(session), expire_stale_sweep_leases(session)

        try:
            expired, expired_sweeps = await asyncio.to_thread(expire)
        except Exception as exc:
            logger.debug("lease expiry failed: %s", exc)
            continue
        if expired:
            logger.warning("jobs %s lost their worker (lease expired)", expired)
        if expired_sweeps:
            logger.warning("sweeps %s lost their runner (lease expired)", expired_sweeps)


async def _publish_metrics(metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(METRICS_SNAPSHOT_SECONDS)
        try:
            metrics.write_snapshot()
        except OSError as exc:  # a full or vanished directory must not end the task: the next write may work
            logger.warning("could not write the metrics snapshot: %s", exc)


def freeze_startup_objects() -> None:
    """Keep everything alive after start-up out of the garbage collector's full collections.

    Measured (bench/serve_bench.py, 1024 observations per request): each request's thousand small lists made
    full collections frequent, and each one walked the ~240,000 objects of the loaded libraries (numba, FastAPI,
    SQLAlchemy, ...) for about 100 ms, stalling every request in flight: p99 110 ms against a p50 of 7 ms.
    Frozen, a full collection takes a fraction of a millisecond. The first call in a process collects first, so
    start-up garbage is freed rather than kept for good; later calls (more apps in one test process) only freeze.
    """
    global _startup_collected
    if not _startup_collected:
        gc.collect()
        _startup_collected = True
    gc.freeze()


_startup_collected = False


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    if settings.policy_file is not None:
        # Fail fast on a bad POLICY_FILE: it is configuration, and retrying will not fix it.
        load_actor_file(settings.policy_file)

    database = Database.connect(settings.database_url, settings.default_model)
    database.chunk_storage = open_chunk_storage(settings.experience_url)
    # The readiness ping and the policy refresh on threads of their own: no client load can delay them.
    control = ControlThreads()
    cache = PolicyCache(
        database.serving_state,
        database.stored_policy,
        lru_size=settings.policy_lru_size,
        read_registry=database.registry_snapshot,
        default_model=settings.default_model,
        executor=control.executor,
    )
    live = LiveReturns(database.flush_live_returns)
    experience = ExperienceRecorder(
        database.flush_experience, metrics, max_buffered=settings.experience_buffer_transitions
    )
    sessions = SessionTable(
        idle_seconds=settings.session_idle_seconds,
        max_sessions=settings.max_sessions,
        dropped=metrics.sessions_dropped,
        on_drop=lambda key, session: experience.dropped(session.model_id, key[0], "session_dropped"),
    )
    shadow = ShadowComparisons(metrics, live, capacity=settings.shadow_queue_size)
    routing = Routing(settings.default_model, cache, metrics, sessions, live, shadow, experience)
    app.state.database = database
    app.state.control_threads = control
    app.state.job_events = job_events = JobEventHub(
        job_events_reader(database.sessions),
        max_streams=settings.max_event_streams,
        poll_seconds=settings.event_poll_seconds,
    )
    app.state.policy_cache = cache
    app.state.policy_files = PolicyFiles()
    app.state.act_runtime = runtime = ActRuntime(cache, metrics, settings.max_batch, settings.act_api_key, routing)
    logger.info("API starting on database %s", redacted(settings.database_url))

    background: list[asyncio.Task[None]] = []
    try:
        # Normally the database is there: prepare it and load the default policy before the first request,
        # so /readyz is true from the start. If not, start anyway and keep trying in the background.
        if await database.try_prepare(settings.policy_file):
            await cache.refresh()
        else:
            background.append(
                asyncio.create_task(database.prepare_with_retry(settings.policy_file), name="database-prepare")
            )
        background.append(
            asyncio.create_task(
                _expire_stale_leases(database, settings.lease_expiry_check_seconds), name="lease-expiry"
            )
        )
        background.append(asyncio.create_task(sessions.run_expiry(SESSION_EXPIRY_SECONDS), name="session-expiry"))
        background.append(asyncio.create_task(shadow.run(), name="shadow-comparisons"))
        background.append(
            asyncio.create_task(live.run(settings.live_stats_flush_seconds, cache.refresh), name="live-returns")
        )
        background.append(
            asyncio.create_task(experience.run(settings.experience_flush_seconds), name="experience-flush")
        )
        # Compile /act's one-observation kernel before serving, even with no policy yet: compiling holds the GIL
        # for most of a second, which later, under traffic, would stall every request of the process once.
        await asyncio.to_thread(forward_one_kernel)
        if metrics.snapshots is not None:
            background.append(asyncio.create_task(_publish_metrics(metrics), name="metrics-snapshots"))
        freeze_startup_objects()
        grpc_server = serving_grpc(
            host=settings.host,
            port=settings.grpc_port,
            runtime=runtime,
            # As GET /v2/health/ready: the database is prepared and a default policy is loaded.
            server_ready=lambda: database.prepared.is_set() and cache.default is not None,
            version=app.version,
            max_message_bytes=settings.max_body_bytes,
        )
        async with running_refresher(cache, settings.policy_refresh_seconds), grpc_server:
            yield
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # What this process measured since its last flush: compared and written once more, best effort.
        shadow.drain()
        with contextlib.suppress(Exception):
            await live.flush()
        with contextlib.suppress(Exception):
            await experience.flush()
        await job_events.close()
        control.shutdown()
        database.close()
        metrics.process_exiting()
