"""A local MLflow store per test, copied from one migrated once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its schema, made once: MLflow's migrations take seconds per new database."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, empty_store_file: Path) -> tuple[str, str]:
    """A local tracking + registry store (sqlite) of this test's own, and an artifact root, under tmp_path."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store_file, path)
    return f"sqlite:///{path}", (tmp_path / "artifacts").as_uri()
