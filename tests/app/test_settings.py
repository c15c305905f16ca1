"""Settings: defaults, environment variables, and failing fast on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from store.db import default_database_url


def test_defaults(clean_env: None) -> None:
    settings = Settings()
    assert settings.port == 8000 and settings.max_batch == 4096 and settings.policy_refresh_seconds == 0.5
    assert settings.data_dir == Path("data")
    assert settings.database_url == default_database_url(Path("data"))
    assert settings.api_key is None and settings.act_api_key is None and settings.policy_file is None
    assert settings.embedded_worker and settings.bootstrap_job and not settings.bench_endpoints


def test_environment_variables_are_read(clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("MAX_BATCH", "64")
    monkeypatch.setenv("API_KEY", "s3cret")
    monkeypatch.setenv("EMBEDDED_WORKER", "false")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.port == 9001 and settings.max_batch == 64 and not settings.embedded_worker
    assert settings.database_url == default_database_url(tmp_path)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert settings.log_level == "DEBUG"
    # The key never shows in a repr (and so never in a log line that prints the settings).
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_empty_keys_and_paths_mean_unset(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "")
    monkeypatch.setenv("ACT_API_KEY", "  ")
    monkeypatch.setenv("POLICY_FILE", "")
    settings = Settings()
    assert settings.api_key is None and settings.act_api_key is None and settings.policy_file is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "0"),
        ("PORT", "70000"),
        ("PORT", "eighty"),
        ("MAX_BATCH", "0"),
        ("MAX_QUEUED_JOBS", "-1"),
        ("MAX_BODY_BYTES", "10"),
        ("POLICY_REFRESH_SECONDS", "0"),
        ("WORKERS", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("EMBEDDED_WORKER", "maybe"),
        ("DATABASE_URL", "just-a-path.db"),
        ("POLICY_FILE", "/nonexistent/actor.safetensors"),
        ("TRAIN_MAX_EPISODES", "0"),
    ],
)
def test_bad_values_fail_fast_naming_the_setting(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    text = str(caught.value).lower()
    assert name.lower() in text
