"""Wiring only: build the FastAPI app from Settings. `uvicorn app.main:create_app --factory` or `app.main:app`.

Importing this module has no side effects: `app` is created on first access (module __getattr__), and all
I/O (database, policies, background tasks) happens in the lifespan.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter

from app.infra.body_limit import BodySizeLimitMiddleware
from app.infra.child_states import ChildStatesFile
from app.infra.errors import install_error_handlers
from app.infra.log_filters import install_log_filters
from app.infra.metrics import Metrics, MetricsMiddleware
from app.lifespan import lifespan
from app.routes import (
    act,
    api_docs,
    bench,
    dashboard,
    experience_export,
    health,
    jobs,
    kserve,
    learners,
    models,
    policies,
    policy_imports,
    rollout,
    stream,
    sweeps,
    train,
)
from app.routes.openapi_security import install_openapi_security
from app.routes.policy_imports import POLICY_UPLOAD_PATH
from app.serving.fast_path import FastPathApp, install_fast_path
from app.settings import Settings

API_DESCRIPTION = """Serve a DDPG actor for gymnasium `Pendulum-v1` (POST /act) and train new ones (POST /train).

Every error is `{"error": {"code", "message", "details"}}`. Mutating endpoints need `Authorization: Bearer <key>`
when the server has an API_KEY, and POST /act and the inference routes when it has an ACT_API_KEY (the operations
that need a key on this server declare it)."""


# The routers every app serves, included once per process. FastAPI builds an included router's handlers (their
# dependencies, request and response models: about 0.1 CPU s for these) on the first request to it, once per inclusion;
# the apps of one process share these inclusions, so a process that builds several apps (the tests build hundreds)
# builds them once. The cost: `app.dependency_overrides` does not reach these routes (nothing here uses it).
SERVED_ROUTES = APIRouter()
for _router in (
    act.router,
    stream.router,
    train.router,
    jobs.router,
    sweeps.router,
    policies.router,
    models.router,
    policy_imports.router,
    experience_export.router,
    rollout.router,
    learners.router,
    health.router,
    kserve.router,
    dashboard.router,
    api_docs.router,
):
    SERVED_ROUTES.include_router(_router)


def configure_logging(settings: Settings) -> None:
    """Give our loggers a handler when nobody else did (uvicorn only configures its own), and filter what every
    handler writes: no key at any level, control characters escaped, WebSocket connections only with the access
    log (app.infra.log_filters)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("app", "store", "models"):
        logging.getLogger(name).setLevel(settings.log_level)
    keys = [key.get_secret_value() for key in (settings.api_key, settings.act_api_key) if key is not None]
    install_log_filters(keys, access_log=settings.access_log)


def create_app(settings: Settings | None = None) -> FastPathApp:
    """The application: routers, error shape, middleware; state filled in by the lifespan."""
    settings = settings or Settings()
    configure_logging(settings)
    metrics = Metrics()
    application = FastPathApp(
        title="DDPG policy service",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # The docs pages load vendored assets, not a CDN's: app.routes.api_docs serves them.
        docs_url=None,
        redoc_url=None,
        routes=list(SERVED_ROUTES.routes),
    )
    application.state.settings = settings
    application.state.metrics = metrics
    # The states of the children `python -m app` runs beside the API (None without them), shown by /readyz.
    application.state.embedded_states = ChildStatesFile.from_environment()
    install_error_handlers(application)
    # add_middleware wraps: the last added runs first. Metrics outermost, so 413s are counted and timed too.
    application.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        upload_limits=((POLICY_UPLOAD_PATH, settings.max_upload_bytes),),
    )
    application.add_middleware(MetricsMiddleware, metrics=metrics)
    # POST /act (and /bench/noop) ahead of all of that, with the metrics and the body limit inline.
    install_fast_path(
        application, metrics, max_body_bytes=settings.max_body_bytes, bench_endpoints=settings.bench_endpoints
    )
    if settings.bench_endpoints:
        application.include_router(bench.router)
    install_openapi_security(application, settings)
    return application


_app: FastPathApp | None = None


def __getattr__(name: str) -> FastPathApp:
    # `uvicorn app.main:app` works, yet importing app.main builds nothing until someone asks for `app`.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
