"""FastAPI dependencies as `Annotated` aliases: what an endpoint needs, declared in its signature."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.infra.child_states import ChildStatesFile
from app.infra.content_type import check_json_content_type
from app.infra.control_threads import ControlThreads
from app.infra.database import Database
from app.infra.errors import ApiError
from app.infra.metrics import Metrics
from app.infra.security import check_bearer
from app.jobs.event_hub import JobEventHub
from app.services.policy_files import PolicyFiles
from app.serving.policy_cache import PolicyCache
from app.serving.runtime import ActRuntime
from app.settings import Settings
from models.errors import one_line
from models.registry_vocabulary import NAME_MAX_LENGTH

logger = logging.getLogger(__name__)

# auto_error=False: we raise our own 401 in the one error shape. The scheme is documented in OpenAPI on the routes
# that depend on it, and app.routes.openapi_security takes it out again when no API_KEY is set.
API_KEY_SCHEME = "ApiKey"
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=API_KEY_SCHEME,
    description="`Authorization: Bearer <API_KEY>`: training, cancels, promotions, models, aliases and rollouts.",
)


def _app_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency answering `app.state.<name>`, which create_app or the lifespan set (its alias below types it).

    The dependencies in this module that do no I/O are async, so FastAPI calls them on the event loop: a plain
    function would be run in the thread pool, a hop to a thread and back for each of them in every request."""

    async def read(request: Request) -> Any:
        return getattr(request.app.state, name)

    return read


SettingsDep = Annotated[Settings, Depends(_app_state("settings"))]
DatabaseDep = Annotated[Database, Depends(_app_state("database"))]
PolicyCacheDep = Annotated[PolicyCache, Depends(_app_state("policy_cache"))]
MetricsDep = Annotated[Metrics, Depends(_app_state("metrics"))]
ActRuntimeDep = Annotated[ActRuntime, Depends(_app_state("act_runtime"))]
PolicyFilesDep = Annotated[PolicyFiles, Depends(_app_state("policy_files"))]
ControlThreadsDep = Annotated[ControlThreads, Depends(_app_state("control_threads"))]
JobEventHubDep = Annotated[JobEventHub, Depends(_app_state("job_events"))]
EmbeddedStatesDep = Annotated[ChildStatesFile | None, Depends(_app_state("embedded_states"))]

# How long a client should wait before retrying while the database is not ready (migrations, a restart).
DATABASE_RETRY_AFTER_SECONDS = 5


async def get_ready_database(database: DatabaseDep) -> Database:
    """The database once it is prepared (migrated, POLICY_FILE registered); 503 with Retry-After until then.

    Async: a check this small is not worth a hop to the thread pool on every request with a session."""
    if not database.prepared.is_set():
        raise ApiError(
            503,
            "database_unavailable",
            "the database is not ready yet",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    return database


ReadyDatabaseDep = Annotated[Database, Depends(get_ready_database)]


def get_session(database: ReadyDatabaseDep) -> Iterator[Session]:
    """A session per request (sync: FastAPI runs it and `def` endpoints in its thread pool)."""
    session = database.sessions()
    try:
        yield session
    finally:
        try:
            session.close()
        except SQLAlchemyError as exc:
            # The connection broke after the request's own work (a database cut): closing rolls back on a dead
            # connection. The answer is already decided; a failed clean-up must not turn it into a 500.
            logger.warning("closing a request's database session failed: %s", one_line(exc))


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a list to answer: at most `limit` items, after the first `offset`."""

    limit: int
    offset: int


# Counts are 32-bit integers in PostgreSQL: a bigger offset is a bad request, not a database error.
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]


async def get_page(limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0) -> Page:
    return Page(limit, offset)


async def get_sweep_page(limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0) -> Page:
    """A smaller page: each sweep comes with all its trials."""
    return Page(limit, offset)


# A name in a path (a model's, an alias'), before it reaches a query: no control character (PostgreSQL cannot store a
# NUL, psycopg refuses it with a DataError, and none belongs in a name), so such a path is a 422 naming the parameter.
# Not the full naming rule (models.registry_vocabulary.NAME_PATTERN): a name that breaks only that is simply unknown,
# a 404, as it always was.
PATH_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"


def _name_in_path(description: str) -> Any:
    return Path(min_length=1, max_length=NAME_MAX_LENGTH, pattern=PATH_NAME_PATTERN, description=description)


ModelNameParam = Annotated[str, _name_in_path("The model's name.")]
AliasParam = Annotated[str, _name_in_path("The alias.")]

PageDep = Annotated[Page, Depends(get_page)]
SweepPageDep = Annotated[Page, Depends(get_sweep_page)]


async def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Mutating endpoints: 401 unless the configured API_KEY is presented (open when API_KEY is unset)."""
    if settings.api_key is None:
        return
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    check_bearer(authorization, settings.api_key)


ApiKeyDep = Depends(require_api_key)


async def require_json_content_type(request: Request) -> None:
    """415 for a body declared as something other than JSON (a missing Content-Type is read as JSON)."""
    check_json_content_type(request.headers.get("content-type"))


# A mutating endpoint with a JSON body: the API key, then the body's content type.
JSON_WRITE = (ApiKeyDep, Depends(require_json_content_type))
