"""Shared fixtures: a fresh, migrated-or-empty database per test on SQLite always, and on PostgreSQL whenever
TEST_DATABASE_URL is set (each test gets its own schema there, dropped afterwards)."""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from models.random_actor import random_actor_bytes
from store.db import create_db_engine, make_session_factory, migrate
from store.registry import get_model
from store.tables.registry import Model
from tests import processes, scheduling

# Policies trained by other libraries (SB3, CleanRL) once per session, for the import tests of models/ and app/.
from tests.sb3_models import foreign  # noqa: F401

POSTGRES_ENV = "TEST_DATABASE_URL"


def _share_one_default_ssl_context() -> None:
    """httpx builds a new SSL context for every client, loading a CA bundle (certifi's, or SSL_CERT_FILE's: 30 to 60
    ms of CPU): every `httpx.get` and `httpx.Client()` pays it, and the tests make thousands of them against
    plain-HTTP servers, most in loops that poll a server every 0.1 s (a third of a core spent on CA bundles). The
    default context is built once per CA setting and shared; a client that asks for anything else (a context of its
    own, verify=False, a cert) still gets what it asked for."""
    import httpx
    import httpx._transports.default as transport

    build = httpx.create_ssl_context  # what the transport module imported
    shared: dict[tuple[str | None, str | None], Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None or not trust_env:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        cas = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if cas not in shared:
            shared[cas] = build()
        return shared[cas]

    transport.create_ssl_context = create_ssl_context  # type: ignore[attr-defined]


_share_one_default_ssl_context()


def pytest_configure(config: pytest.Config) -> None:
    # Which tests share a worker and in what order they are sent (tests/scheduling.py).
    scheduling.register(config)
    # Every server process the tests start compiles /act's kernel (models.fused) at start-up; with a cache
    # directory only the first does. Inherited by the processes the tests start.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(config.rootpath / ".pytest_cache" / "numba"))
    # Stable-Baselines3's logger otherwise leaves a new directory in /tmp for every `learn` the tests run.
    os.environ.setdefault("SB3_LOGDIR", str(config.rootpath / ".pytest_cache" / "sb3-logs"))


def pytest_unconfigure(config: pytest.Config) -> None:
    processes.close_all()  # the preloaded Pythons that fork the tests' server and worker processes
    # Nothing allocated so far needs the cycle collector any more: the interpreter's exit then skips traversing it.
    # With PyTorch, Ray Tune, MLflow... imported, that traversal took a pytest runner 1 to 4 s of its exit, which the
    # end of the run waits for.
    gc.freeze()


def _postgres_schema_url(base_url: str) -> Iterator[str]:
    """A URL whose search_path is a new schema: tables, sequences and alembic_version all live in it."""
    import psycopg

    base = make_url(base_url)
    schema = f"test_{secrets.token_hex(6)}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# For a test of what the HTTP layer refuses before the store is touched: the same on either database, so it runs on
# SQLite only (what the store does keeps running on both).
sqlite_only = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    yield from _postgres_schema_url(base)


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session (per xdist worker). A copy of it is what migrating a new
    file gives, without running every migration again for each of some 300 tests."""
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.sqlite3"
    migrate(f"sqlite:///{path}")
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the main file, which is copied alone
    finally:
        connection.close()
    return path


# What migrating an empty PostgreSQL schema to head sent the server: (statement, parameters, executemany).
MigrationScript = list[tuple[str, Any, bool]]


@pytest.fixture(scope="session")
def postgres_migration_script() -> Iterator[MigrationScript]:
    """Every statement `migrate` sends to migrate an empty PostgreSQL schema, recorded once per session (per xdist
    worker). Replayed on a new schema in one round of statements it builds the same schema as `migrate`, in a
    fraction of alembic's time (its imports, inspection and one transaction per revision cost ~0.2 s a test)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    script: MigrationScript = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        script.append((statement, parameters, executemany))

    for url in _postgres_schema_url(base):
        event.listen(Engine, "before_cursor_execute", record)
        try:
            migrate(url)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        schema = _search_path_schema(url)
        # The statements name no schema (the search path does), or replaying them would touch the recorded one.
        assert not any(schema in statement or schema in repr(parameters) for statement, parameters, _ in script)
        yield script


def _search_path_schema(url: str) -> str:
    options = make_url(url).query["options"]
    assert isinstance(options, str) and options.startswith("-csearch_path=")
    return options.removeprefix("-csearch_path=")


def _replay_migration(url: str, script: MigrationScript) -> None:
    """Run the recorded migration on the (empty) schema of `url`, in one transaction as `migrate` does."""
    import psycopg

    dsn = make_url(url).set(drivername="postgresql")
    with psycopg.connect(dsn.set(query={}).render_as_string(hide_password=False), options=dsn.query["options"]) as conn:
        with conn.pipeline(), conn.cursor() as cursor:  # sent without waiting for each reply
            for statement, parameters, executemany in script:
                if executemany:
                    cursor.executemany(statement, parameters)
                else:
                    cursor.execute(statement, parameters or None)
        conn.commit()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, empty_database_url: str) -> str:
    """A fresh database with the schema migrated to head (on PostgreSQL, the recorded migration replayed)."""
    database = make_url(empty_database_url)
    if database.get_backend_name() == "sqlite" and database.database:
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), database.database)
    else:
        _replay_migration(empty_database_url, request.getfixturevalue("postgres_migration_script"))
    return empty_database_url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


def model_named(session: Session, name: str) -> Model:
    """The model of that name, which the test expects to exist."""
    model = get_model(session, name)
    assert model is not None, f"no model named {name!r}"
    return model


ActorFactory = Callable[..., bytes]


def make_actor_bytes(eval_mean_return: float | None = -500.0, *, seed: int = 0, hidden_size: int = 8) -> bytes:
    """A small but valid `ddpg-actor/1` file for Pendulum (obs 3, act 1)."""
    return random_actor_bytes(seed, hidden_size=hidden_size, bias_scale=0.0, eval_mean_return=eval_mean_return)


@pytest.fixture
def actor_bytes() -> ActorFactory:
    """make_actor_bytes, as a fixture for tests that prefer injection."""
    return make_actor_bytes


# ---- a local MLflow store (tracking and registry) per test, copied from one migrated once per session


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its schema, made once: MLflow's migrations take seconds per new database."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, empty_store_file: Path) -> tuple[str, str]:
    """A local tracking + registry store (sqlite) of this test's own, and an artifact root, under tmp_path."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store_file, path)
    return f"sqlite:///{path}", (tmp_path / "artifacts").as_uri()
