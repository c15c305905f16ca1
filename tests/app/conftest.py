"""Fixtures of the API tests: an app on a fresh migrated database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set: `database_url` comes from tests/conftest.py), driven through TestClient."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.serving.policy_cache import PolicyCache
from app.settings import Settings
from store.policies import register_policy

# Settings read the environment; a developer's shell must not change what the tests see.
SETTINGS_ENV = (
    "DATA_DIR",
    "DATABASE_URL",
    "HOST",
    "PORT",
    "WORKERS",
    "GRPC_PORT",
    "API_KEY",
    "ACT_API_KEY",
    "POLICY_FILE",
    "MAX_BATCH",
    "MAX_QUEUED_JOBS",
    "MAX_BODY_BYTES",
    "MAX_UPLOAD_BYTES",
    "POLICY_REFRESH_SECONDS",
    "POLICY_LRU_SIZE",
    "DEFAULT_MODEL",
    "SESSION_IDLE_SECONDS",
    "MAX_SESSIONS",
    "LIVE_STATS_FLUSH_SECONDS",
    "LEASE_EXPIRY_CHECK_SECONDS",
    "SHADOW_QUEUE_SIZE",
    "EXPERIENCE_FLUSH_SECONDS",
    "EXPERIENCE_BUFFER_TRANSITIONS",
    "EXPERIENCE_URL",
    "TRAIN_MAX_EPISODES",
    "TRAIN_MAX_EPISODE_STEPS",
    "TRAIN_MAX_HIDDEN_SIZE",
    "TRAIN_MAX_BATCH_SIZE",
    "TRAIN_MAX_REPLAY_SIZE",
    "SWEEP_MAX_TRIALS",
    "EMBEDDED_WORKER",
    "EMBEDDED_SWEEP_RUNNER",
    "EMBEDDED_LEARNER",
    "BOOTSTRAP_JOB",
    "BOOTSTRAP_PRESET",
    "BOOTSTRAP_EPISODES",
    "ACCESS_LOG",
    "MAX_EVENT_STREAMS",
    "EVENT_POLL_SECONDS",
    "MAX_HEADER_BYTES",
    "BODY_TIMEOUT_SECONDS",
    "LIMIT_CONCURRENCY",
    "BENCH_ENDPOINTS",
    "LOG_LEVEL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTERED_MODEL",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(clean_env: None, tmp_path: Path, database_url: str) -> SettingsFactory:
    """Settings on the test database; keyword arguments override fields."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "database_url": database_url}
        values.update(overrides)
        return Settings(**values)

    return factory


class Api:
    """A TestClient plus direct access to the app's database and policy cache."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def cache(self) -> PolicyCache:
        cache: PolicyCache = self.client.app.state.policy_cache  # type: ignore[attr-defined]
        return cache

    def add_policy(self, weights: bytes, *, promote: str = "never", refresh: bool = True) -> int:
        """Register a policy straight in the database (as a worker would), then let this process notice."""
        with self.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
            policy = register_policy(session, weights=weights, promote=promote)
            session.commit()
            policy_id = policy.id
        if refresh:
            self.refresh()
            if promote == "always":
                self._wait_until_default(policy_id)
        return policy_id

    def _wait_until_default(self, policy_id: int, deadline: float = 10.0) -> None:
        """One poll normally suffices; a poll that failed on a busy shared database is retried (as the
        background refresher would), bounded, so a test starts from the state it set up."""
        stop = time.monotonic() + deadline
        while (self.cache.default is None or self.cache.default.policy_id != policy_id) and time.monotonic() < stop:
            time.sleep(0.05)
            self.refresh()

    def refresh(self) -> None:
        """Run one poll of the serving state now (instead of waiting for the background refresher)."""
        self.client.portal.call(self.cache.refresh)  # type: ignore[union-attr]


ApiFactory = Callable[..., Api]


@pytest.fixture
def make_api(make_settings: SettingsFactory) -> Iterator[ApiFactory]:
    """Start an app (its lifespan runs) with settings overrides; every started app is shut down at the end."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> Api:
        client = TestClient(create_app(make_settings(**overrides)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Api(client)

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    """An app with the default settings and no policy."""
    return make_api()
