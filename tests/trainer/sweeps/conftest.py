"""A real two-node Ray cluster for the module (head + one worker, one CPU each), and sweep runner processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.db import create_db_engine, make_session_factory, migrate
from tests.conftest import POSTGRES_ENV, _postgres_schema_url
from tests.processes import ChildProcess, start_process
from tests.trainer.sweeps.ray_cluster import RayCluster

ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 240.0
# Each look opens a session and queries (about 3 ms of CPU here, and the database server's): ten a second cost the
# test process 3% of a core while the trials train; four a second still see each change soon after it happens.
POLL_SECONDS = 0.25


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        cluster.start_head()
        cluster.add_worker()
        yield cluster
        # The preloading saves time only if it happens: a shim that fell back to starting workers the usual way
        # would pass every test above, slower.
        forked = cluster.forked_workers()
        assert forked is None or len(forked) >= 2, f"no trial ran in a forked worker: {forked}\n{cluster.logs()}"
    finally:
        cluster.stop()


@pytest.fixture
def two_nodes(ray_cluster: RayCluster) -> RayCluster:
    """The cluster with its head and exactly one live worker (a test before may have killed one)."""
    if not ray_cluster.live_workers():
        ray_cluster.add_worker()
    return ray_cluster


@pytest.fixture
def sweep_database(tmp_path: Path) -> Iterator[str]:
    """PostgreSQL when TEST_DATABASE_URL is set (as on several machines), SQLite otherwise: the cluster's trials
    write from their own processes either way. One database per test, migrated."""
    base = os.environ.get(POSTGRES_ENV)
    if base:
        for url in _postgres_schema_url(base):
            migrate(url)
            yield url
        return
    url = f"sqlite:///{tmp_path / 'sweeps.sqlite3'}"
    migrate(url)
    yield url


@pytest.fixture
def sweep_sessions(sweep_database: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(sweep_database)
    yield make_session_factory(engine)
    engine.dispose()


RunnerFactory = Callable[..., ChildProcess]


@pytest.fixture
def start_runner(ray_cluster: RayCluster, sweep_database: str, tmp_path: Path) -> Iterator[RunnerFactory]:
    """`python -m trainer sweeps --once` against the cluster (RAY_ADDRESS) and the test database."""
    started: list[ChildProcess] = []

    def start(*args: str) -> ChildProcess:
        log = (tmp_path / f"runner-{len(started)}.log").open("wb")
        env = {**ray_cluster.env, "DATABASE_URL": sweep_database, "RAY_ADDRESS": ray_cluster.address}
        process = start_process(
            [sys.executable, "-m", "trainer", "sweeps", "--once", "--poll-interval=0.2", "--lease-seconds=10", *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def runner_logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
        for path in sorted(tmp_path.glob("runner-*.log"))
    )


def wait_for(
    condition: Callable[[], Any], what: str, diagnostics: Callable[[], str], deadline: float = DEADLINE
) -> Any:
    """Poll until `condition()` is truthy; the deadline only keeps a broken build from hanging."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out waiting for {what}\n{diagnostics()}")
