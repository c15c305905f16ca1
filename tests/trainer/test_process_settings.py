"""The worker, the sweep runner and `python -m store` read their settings once at start: a bad value, from the
environment or a flag, stops them with one line naming it (real subprocesses, as a container runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.mlflow_registry import registered_model_name
from store.settings import BAD_SETTINGS_EXIT, ProcessSettings, check_database_url
from tests.processes import run_process
from trainer.settings import WorkerSettings

COMMANDS = {
    "worker": ["-m", "trainer", "worker", "--once"],
    "sweeps": ["-m", "trainer", "sweeps", "--once"],
    "store": ["-m", "store", "ping"],
}


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "RAY_ADDRESS"}}
    return run_process(
        [sys.executable, *args], cwd=tmp_path, env={**clean, "DATA_DIR": str(tmp_path), **env}, timeout=120
    )


def _one_line_naming(proc: subprocess.CompletedProcess[str], name: str) -> str:
    assert proc.returncode == BAD_SETTINGS_EXIT, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one line, no traceback
    assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_database_url_in_the_environment_stops_the_process_with_one_line(command: str, tmp_path: Path) -> None:
    line = _one_line_naming(_run(COMMANDS[command], tmp_path, DATABASE_URL="nonsense"), "DATABASE_URL")
    assert "nonsense" in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_database_url_flag_stops_the_process_with_one_line(command: str, tmp_path: Path) -> None:
    _one_line_naming(_run([*COMMANDS[command], "--database-url", "nonsense"], tmp_path), "DATABASE_URL")


@pytest.mark.parametrize("command", ["worker", "sweeps"])
def test_a_bad_log_level_stops_the_process_with_one_line(command: str, tmp_path: Path) -> None:
    _one_line_naming(_run(COMMANDS[command], tmp_path, LOG_LEVEL="LOUD"), "LOG_LEVEL")


def test_the_worker_takes_its_flags_defaults_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.worker import parse_args

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/from-env.db")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    options = parse_args([])
    assert options.database_url.endswith("from-env.db") and options.ray_address == "10.0.0.1:6379"
    assert parse_args(["--ray-address", "other:1"]).ray_address == "other:1"


def test_the_sweep_runner_takes_its_flags_defaults_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.sweeps.cli import parse_args

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    options, settings = parse_args(["--runner-id", "r1"])
    assert options.database_url == settings.database_url and str(tmp_path) in options.database_url
    assert options.runner_id == "r1"


@pytest.mark.parametrize("url", ["nonsense", "just-a-path.db", "mysql://user@host/db", "://missing-scheme"])
def test_only_sqlite_and_postgresql_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        check_database_url(url)


def test_an_empty_database_url_means_sqlite_under_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = WorkerSettings()
    assert settings.database_url.startswith("sqlite:///") and str(tmp_path) in settings.database_url


def test_each_model_has_its_own_registered_model_except_the_default() -> None:
    settings = ProcessSettings(default_model="cartpole", mlflow_registered_model="prod-policy")
    names = {"default_model": settings.default_model, "default_registered_model": settings.mlflow_registered_model}
    assert registered_model_name("cartpole", **names) == "prod-policy"
    assert registered_model_name("pendulum", **names) == "pendulum"
    assert registered_model_name("mountaincar", **names) == "mountaincar"
