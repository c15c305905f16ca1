"""What `python -m app` runs (app.__main__ hands over here once the process environment is set).

Migrates the database, registers POLICY_FILE, queues a bootstrap training job when there is no policy yet,
starts one trainer worker subprocess (EMBEDDED_WORKER), the online learner process (EMBEDDED_LEARNER) and the sweep
runner (EMBEDDED_SWEEP_RUNNER, when Ray Tune is installed), kept running by app.infra.supervisor, then serves with
uvicorn (uvloop + httptools, WORKERS processes; request heads, request arrival time, WebSocket messages and, when set,
concurrency bounded). Ctrl-C or SIGTERM stops the API, then the children together, cleanly, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any, cast

import uvicorn
from pydantic import ValidationError

from app.infra.child_states import EMBEDDED_STATES_ENV, ChildStatesFile
from app.infra.database import Database, redacted
from app.infra.embedded import queue_bootstrap_job, sweep_runner_available, trainer_available
from app.infra.http_protocol import BoundedHttpToolsProtocol
from app.infra.metrics import MULTIPROC_DIR_ENV
from app.infra.supervisor import EmbeddedChildren
from app.main import configure_logging
from app.settings import Settings
from models.weights import WeightsFormatError, load_actor_file

logger = logging.getLogger("app")


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down; turning SIGTERM into SystemExit
    # (instead of the default immediate death) lets the `finally` below stop the worker too.
    raise SystemExit(0)


def _multiprocess_metrics_dir(workers: int) -> str | None:
    """With several workers, give prometheus_client a fresh shared directory so /metrics sums all of them."""
    if workers == 1 or os.environ.get(MULTIPROC_DIR_ENV):
        return None
    path = tempfile.mkdtemp(prefix="ddpg-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = path  # inherited by the uvicorn workers, read when they import the client
    return path


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """httptools with the request-head bound and the request deadline (app.infra.http_protocol).

    uvicorn calls `http` with its own keyword arguments, so a partial that adds ours is a protocol class as far as
    uvicorn is concerned (its type says `type`); a partial of a module-level class pickles, for WORKERS > 1.
    """
    factory = functools.partial(
        BoundedHttpToolsProtocol,
        max_head_bytes=settings.max_header_bytes,
        request_timeout=settings.body_timeout_seconds,
    )
    return cast("type[asyncio.Protocol]", factory)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How `python -m app` runs uvicorn, apart from the application: also what bench/serve_bench.py runs its
    bare-ASGI floor with, so that floor is this server's and not a differently configured one's."""
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": "uvloop",
        "http": http_protocol(settings),
        "log_level": settings.log_level.lower(),
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": 10,
        # A WebSocket message is a request body too: the same bound, or a frame is read up to uvicorn's 16 MiB.
        "ws_max_size": settings.max_body_bytes,
        # Bounds a request head under h11 (`--http h11`); httptools' bound is BoundedHttpToolsProtocol's.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "limit_concurrency": settings.limit_concurrency,
    }


def prepare(settings: Settings) -> None:
    """Before forking API workers: schema, POLICY_FILE and bootstrap job, once (not once per worker)."""
    database = Database.connect(settings.database_url)
    try:
        database.prepare(settings.policy_file)
        if settings.bootstrap_job:
            queue_bootstrap_job(
                database.sessions,
                preset=settings.bootstrap_preset,
                episodes=settings.bootstrap_episodes,
                max_queued=settings.max_queued_jobs,
            )
    finally:
        database.close()


def start_children(settings: Settings) -> tuple[EmbeddedChildren, str | None]:
    """The embedded trainer worker and sweep runner the settings ask for, kept running, with their states published
    for /readyz in a fresh directory (returned, to be removed at the end; None when there are no children)."""
    wanted = []
    # Children run at idle priority unless named here with a niceness.
    niceness: dict[str, int] = {}
    if settings.embedded_worker:
        if trainer_available():
            wanted.append(("trainer worker", ["worker"], "jobs will stay queued"))
        else:
            logger.error("EMBEDDED_WORKER is set but torch/gymnasium are not installed; no jobs will run here")
    if settings.embedded_learner and trainer_available():
        # Beside the job worker, never in its queue: a learner runs until stopped.
        wanted.append(("learner process", ["learner"], "online learners will stay queued"))
        niceness["learner process"] = settings.embedded_learner_niceness
    if settings.embedded_sweep_runner:
        if sweep_runner_available():
            # It starts a local Ray only when a sweep arrives (or uses RAY_ADDRESS's cluster); its Ray processes
            # inherit its idle priority.
            wanted.append(("sweep runner", ["sweeps"], "sweeps will stay queued"))
        else:
            # Not a fault: the API image has no Ray on purpose, and compose runs the sweep runner as its own service.
            logger.info("Ray Tune is not installed here: sweeps run where `python -m trainer sweeps` runs")
    if not wanted:
        return EmbeddedChildren(None), None
    states_dir = tempfile.mkdtemp(prefix="ddpg-embedded-")
    states_file = Path(states_dir) / "states.json"
    os.environ[EMBEDDED_STATES_ENV] = str(states_file)  # inherited by the uvicorn workers, read by /readyz
    children = EmbeddedChildren(ChildStatesFile(states_file))
    # The database URL goes by environment, not argv (ps shows argv to every user).
    env = dict(os.environ, DATABASE_URL=settings.database_url)
    for name, command, consequence in wanted:
        children.start(name, [sys.executable, "-m", "trainer", *command], env, consequence, niceness=niceness.get(name))
    return children, states_dir


def run() -> int:
    """The one-command run; the process's exit status."""
    try:
        settings = Settings()
    except ValidationError as exc:
        logging.basicConfig(format="%(levelname)s %(message)s")
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper() or 'settings'}: {e['msg']}" for e in exc.errors())
        logger.error("invalid settings: %s", problems)
        return 2
    configure_logging(settings)
    if settings.policy_file is not None:
        # Configuration, not a transient fault: stop here with one clear line rather than blaming the database
        # below and then dying in the lifespan with a traceback.
        try:
            load_actor_file(settings.policy_file)
        except WeightsFormatError as exc:
            logger.error(
                "POLICY_FILE %s is not a valid policy file (ddpg-actor/1 or policy-mlp/1): %s",
                settings.policy_file,
                exc,
            )
            return 2
    logger.info("database %s", redacted(settings.database_url))
    try:
        prepare(settings)
    except Exception as exc:
        # The API still starts; its lifespan keeps retrying and /readyz reports the database as unreachable.
        logger.error("database not ready at start-up (%s: %s); starting anyway", type(exc).__name__, exc)

    children, states_dir = start_children(settings)
    metrics_dir = _multiprocess_metrics_dir(settings.workers)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run("app.main:create_app", factory=True, **uvicorn_options(settings))
    except KeyboardInterrupt:
        pass
    finally:
        children.stop_all()
        for directory in (metrics_dir, states_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
    return 0
