"""FastAPI dependencies as `Annotated` aliases: what an endpoint needs, declared in its signature."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.infra.content_type import check_json_content_type
from app.infra.database import Database
from app.infra.errors import ApiError
from app.infra.metrics import Metrics
from app.infra.security import check_bearer
from app.services.policy_files import PolicyFiles
from app.serving.policy_cache import PolicyCache
from app.serving.runtime import ActRuntime
from app.settings import Settings

# auto_error=False: we raise our own 401 in the one error shape; the scheme is still documented in OpenAPI.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API_KEY>` when API_KEY is set.")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_policy_cache(request: Request) -> PolicyCache:
    cache: PolicyCache = request.app.state.policy_cache
    return cache


def get_act_runtime(request: Request) -> ActRuntime:
    runtime: ActRuntime = request.app.state.act_runtime
    return runtime


def get_policy_files(request: Request) -> PolicyFiles:
    files: PolicyFiles = request.app.state.policy_files
    return files


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
PolicyCacheDep = Annotated[PolicyCache, Depends(get_policy_cache)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ActRuntimeDep = Annotated[ActRuntime, Depends(get_act_runtime)]
PolicyFilesDep = Annotated[PolicyFiles, Depends(get_policy_files)]

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
    with database.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Mutating endpoints: 401 unless the configured API_KEY is presented (open when API_KEY is unset)."""
    if settings.api_key is None:
        return
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    check_bearer(authorization, settings.api_key)


ApiKeyDep = Depends(require_api_key)


def require_json_content_type(request: Request) -> None:
    """415 for a body declared as something other than JSON (a missing Content-Type is read as JSON)."""
    check_json_content_type(request.headers.get("content-type"))
