"""Schema migrations: from an empty database, idempotent, race-safe, and in step with the ORM models."""

from __future__ import annotations

import json
import multiprocessing

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from store.db import alembic_config, create_db_engine, migrate
from store.tables.base import Base


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
        assert {"models", "model_aliases", "rollouts", "live_returns"} <= tables
        index_names = {index["name"] for index in inspect(engine).get_indexes("jobs")}
        assert "ix_jobs_status_created_at" in index_names
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == _head(
                empty_database_url
            )
            # The default policy is now the default model's champion alias; the row is the registry's version.
            row = connection.execute(text("SELECT id, version FROM serving_state")).one()
            assert tuple(row) == (1, 0)
            model = connection.execute(text("SELECT name, env_id FROM models")).one()
            assert tuple(model) == ("pendulum", "Pendulum-v1")
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
    # Four processes of their own, forked from one fresh Python that has imported the migrations' libraries: "spawn"
    # would start four interpreters that each import them (6 CPU s for this test's two databases), and forking the
    # test process itself would copy its threads' locks.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["store.db"])
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


def test_upgrading_from_0002_moves_policies_into_models(empty_database_url: str) -> None:
    """Pendulum policies join the default model, another environment's get a model of their own, and the old default
    policy becomes its model's champion."""
    from models.random_actor import random_actor_bytes
    from store.db import make_session_factory
    from store.policies import get_serving_state
    from store.registry import get_aliases
    from tests.conftest import model_named

    command.upgrade(alembic_config(empty_database_url), "0002")
    engine = create_db_engine(empty_database_url)
    car = random_actor_bytes(1, obs_dim=2, act_dim=1, action_bound=1.0, env_id="MountainCarContinuous-v0")
    try:
        insert = text(
            "INSERT INTO policies (id, created_at, sha256, weights, meta, env_id, obs_dim, act_dim) "
            "VALUES (:id, CURRENT_TIMESTAMP, 'x', :weights, :meta, :env, :obs, 1)"
        )
        with engine.begin() as connection:
            for policy_id, env_id, obs_dim, weights in (
                (1, "Pendulum-v1", 3, random_actor_bytes(0)),
                (2, "MountainCarContinuous-v0", 2, car),
            ):
                meta = json.dumps({"obs_dim": obs_dim, "act_dim": 1, "action_low": [-1.0], "action_high": [1.0]})
                values = {"id": policy_id, "weights": weights, "meta": meta, "env": env_id, "obs": obs_dim}
                connection.execute(insert, values)
            connection.execute(text("UPDATE serving_state SET default_policy_id = 1, version = 7"))
        migrate(empty_database_url)
        with make_session_factory(engine)() as session:
            pendulum, car_model = model_named(session, "pendulum"), model_named(session, "mountaincarcontinuous-v0")
            assert get_aliases(session, pendulum.id) == {"champion": 1} and get_aliases(session, car_model.id) == {}
            assert car_model.spaces["obs_dim"] == 2 and car_model.spaces["action_high"] == [1.0]
            assert get_serving_state(session) == (1, 7)
            rows = session.execute(text("SELECT id, model_id FROM policies ORDER BY id")).all()
            assert [tuple(row) for row in rows] == [(1, pendulum.id), (2, car_model.id)]
    finally:
        engine.dispose()
