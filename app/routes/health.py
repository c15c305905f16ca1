"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.infra.child_states import ChildStatesFile
from app.infra.errors import ApiError
from app.routes.deps import (
    ActRuntimeDep,
    ControlThreadsDep,
    DatabaseDep,
    EmbeddedStatesDep,
    MetricsDep,
    PolicyCacheDep,
)
from app.schemas.errors import error_responses, file_responses
from app.schemas.health import EmbeddedChildOut, HealthOut, ReadyOut
from models.training_config import JOB_STATUSES
from store import live_returns
from store.jobs import count_jobs_by_status

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# A hung database must not hang the health check that is supposed to report it.
READY_DB_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """Alive: the process answers HTTP (says nothing about the database or the policy)."""
    return HealthOut()


@router.get("/readyz", response_model=ReadyOut, responses=error_responses(503))
async def readyz(
    database: DatabaseDep, cache: PolicyCacheDep, control: ControlThreadsDep, embedded_states: EmbeddedStatesDep
) -> ReadyOut:
    """Ready to serve /act: the database is reachable and a default policy is loaded; 503 says which is not. Also
    the state of each embedded child (trainer worker, sweep runner), which a 503 lists among its details when down."""
    embedded = _embedded(embedded_states)

    def not_ready(message: str) -> ApiError:
        down = [
            {"field": f"embedded.{name}", "message": f"{child.state} (last exit code {child.exit_code})"}
            for name, child in (embedded or {}).items()
            if child.state != "running"
        ]
        return ApiError(503, "not_ready", message, details=down, headers={"Retry-After": "5"})

    if not database.prepared.is_set():
        raise not_ready("database not reachable or not migrated yet")
    try:
        # On the control threads, one ping at a time: client load cannot delay it, nor can a hammered /readyz.
        await asyncio.wait_for(control.run_shared("readiness-ping", database.ping), READY_DB_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.debug("readiness ping failed: %s", exc)
        raise not_ready("database not reachable") from None
    loaded = cache.default
    if loaded is None:
        raise not_ready("no policy loaded yet (training a first one?)")
    return ReadyOut(policy_id=loaded.policy_id, embedded=embedded)


def _embedded(states: ChildStatesFile | None) -> dict[str, EmbeddedChildOut] | None:
    """The embedded children by name (`trainer_worker`, `sweep_runner`), None without any; a small local file."""
    if states is None:
        return None
    return {
        name.replace(" ", "_"): EmbeddedChildOut(
            state=child.state, pid=child.pid, restarts=child.restarts, exit_code=child.exit_code
        )
        for name, child in states.read().items()
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses=file_responses(
        CONTENT_TYPE_LATEST.split(";")[0], "Prometheus text exposition format.", schema={"type": "string"}, errors=()
    ),
)
def metrics(metrics: MetricsDep, database: DatabaseDep, cache: PolicyCacheDep, runtime: ActRuntimeDep) -> Response:
    """Prometheus metrics: requests and latency by route and status, /act batch sizes, jobs, default policy, sessions,
    rollout sides, live returns per policy (mean and 95% interval), shadow divergence and latency."""
    loaded = cache.default
    metrics.default_policy_id.set(0 if loaded is None else loaded.policy_id)
    metrics.live_sessions.set(len(runtime.routing.sessions))
    if database.prepared.is_set():
        try:
            with database.sessions() as session:
                counts = count_jobs_by_status(session)
                live = live_returns.all_stats(session)
            for status in JOB_STATUSES:
                metrics.jobs.labels(status).set(counts.get(status, 0))
            for model, rollout_id, policy_id, stats in live:
                labels = (model, str(policy_id), str(rollout_id))
                metrics.live_episodes.labels(*labels).set(stats.episodes)
                if stats.mean is not None:
                    metrics.live_return_mean.labels(*labels).set(stats.mean)
                if stats.ci95 is not None:
                    metrics.live_return_ci95.labels(*labels).set(stats.ci95)
        except Exception as exc:  # metrics must still answer while the database is down
            logger.debug("cannot read jobs or live returns for /metrics: %s", exc)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
