"""Schema migrations: from an empty database, idempotent, race-safe, and in step with the ORM models."""

from __future__ import annotations

import multiprocessing

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from store.db import alembic_config, create_db_engine, migrate
from store.tables import Base


def _head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_migrate_from_empty_creates_every_table_and_the_serving_row(empty_database_url: str) -> None:
    migrate(empty_database_url)
    engine = create_db_engine(empty_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"jobs", "episodes", "evaluations", "policies", "serving_state", "alembic_version"} <= tables
        index_names = {index["name"] for index in inspect(engine).get_indexes("jobs")}
        assert "ix_jobs_status_created_at" in index_names
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == _head(
                empty_database_url
            )
            row = connection.execute(text("SELECT id, default_policy_id, version FROM serving_state")).one()
            assert tuple(row) == (1, None, 0)
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    migrate(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM serving_state")).scalar_one() == 1
    finally:
        engine.dispose()


def test_several_processes_migrating_at_once_all_succeed(empty_database_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.map(migrate, [empty_database_url] * 4)
    engine = create_db_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == _head(
                empty_database_url
            )
            assert connection.execute(text("SELECT count(*) FROM serving_state")).scalar_one() == 1
    finally:
        engine.dispose()


def test_upgrading_from_the_first_revision_keeps_every_job(empty_database_url: str) -> None:
    command.upgrade(alembic_config(empty_database_url), "0001")
    engine = create_db_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO jobs (status, config, promote, created_at, attempts, max_attempts, cancel_requested, "
                     "episodes_done, env_steps) VALUES ('succeeded', '{\"episodes\": 3}', 'never', "
                     "CURRENT_TIMESTAMP, 1, 1, false, 3, 600)")
            )  # fmt: skip
        migrate(empty_database_url)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT status, episodes_done, tracking_run_id FROM jobs")).one()
            assert tuple(row) == ("succeeded", 3, None)
    finally:
        engine.dispose()
