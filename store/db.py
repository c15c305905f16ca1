"""Engines, sessions and schema migrations for SQLite (embedded default) and PostgreSQL.

SQLite notes: every transaction starts with `BEGIN IMMEDIATE` (see `_configure_sqlite`). That takes the
database's single write lock up front, so a transaction that reads and then writes can never fail with
SQLITE_BUSY_SNAPSHOT halfway through; concurrent writers wait on `busy_timeout` instead. The price is that
transactions serialise, so keep them short (every function in this package does).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

SQLITE_FILENAME = "ddpg.sqlite3"
# Long enough that a writer queued behind another short transaction never gives up; short enough that a
# genuinely stuck database surfaces as an error instead of a hang.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Arbitrary but fixed: every process that migrates the same PostgreSQL database takes this advisory lock.
MIGRATION_LOCK_KEY = 0x6464_7067_6D69_67  # "ddpgmig"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def default_database_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file under the data directory."""
    return f"sqlite:///{(Path(data_dir).expanduser().resolve() / SQLITE_FILENAME).as_posix()}"


def create_db_engine(url: str) -> Engine:
    """An engine configured for this project: SQLite with WAL, busy_timeout and FKs; PostgreSQL with pre-ping."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        # pool_pre_ping: a connection the server dropped (restart, failover) is replaced instead of failing
        # the next request; connect_timeout keeps an unreachable server from hanging start-up.
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    shown = parsed.render_as_string(hide_password=True)
    raise ValueError(f"unsupported database URL {shown!r}: use sqlite:// or postgresql+psycopg://")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own (deferred) BEGIN; `_on_begin` issues ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer and vice versa
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, far fewer fsyncs
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to the engine.

    expire_on_commit=False: objects returned by committing functions keep their values instead of reloading on
    first access, which would silently open a new transaction (on SQLite one holding the write lock).
    Use one short-lived session per unit of work (`with factory() as session:`).
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """Alembic configured in code, so migrations run from any working directory and from an installed package."""
    # Alembic (and Mako and Pygments with it, about 0.3 CPU s) is imported only by processes that migrate: a Ray
    # trial or a plain Ray job only reads and writes.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    # configparser treats % as interpolation; URLs may carry %-escapes (passwords, options=-csearch_path%3D...).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (`alembic upgrade head`); safe from several processes at once.

    PostgreSQL: a transaction-scoped advisory lock serialises concurrent migrators, and the DDL runs in that
    same transaction, so a second process waits and then finds the schema current. SQLite: the migration's
    transaction begins IMMEDIATE (see `_configure_sqlite`), which holds the file's write lock for the same
    purpose.
    """
    from alembic import command

    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            connection.begin()
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config = alembic_config(url)
            # env.py sees the connection already in a transaction and runs inside it.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()
    logger.debug("database schema is current")
