"""MlflowTracker against a local sqlite store: params, metrics by env step, artifacts, the champion alias; and a
tracking server that is down costs seconds and never an exception."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from models.mlflow_registry import (
    CHAMPION_ALIAS,
    HTTP_DEFAULTS,
    TrackingError,
    bound_http_retries,
    set_champion_alias,
)
from models.onnx_export import read_onnx_metadata
from models.random_actor import random_actor_bytes
from tests.trainer.tracking import records
from trainer.tracking import (
    EPISODE_AVG_RETURN_10,
    EPISODE_RETURN,
    EVAL_MEAN_RETURN,
    EVAL_STD_RETURN,
    RunArtifacts,
)
from trainer.tracking.mlflow_tracker import (
    ACTOR_SHA256_TAG,
    EXPORTED_EVAL_MEAN_RETURN,
    MlflowTracker,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[3]

# MLflow's own store code uses a loader strategy SQLAlchemy 2.1 deprecates; nothing this project can change.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def _mlflow_client(**uris: str) -> MlflowClient:
    """MLflow's client, imported when a test first asks for it: importing MLflow while collecting this module cost
    every pytest runner 0.7 CPU s, and only the one that runs these tests needs it."""
    from mlflow import MlflowClient

    return MlflowClient(**uris)


# Port 9 (discard) on loopback: nothing listens, so every connection is refused at once.
DOWN_SERVER = "http://127.0.0.1:9"
CONFIG = {"env_id": "Pendulum-v1", "seed": 3, "hidden_size": 64, "actor_lr": 0.001, "max_episode_steps": None}


@pytest.fixture
def http_defaults_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLFLOW_HTTP_* in the environment, and whatever the code under test sets is undone afterwards."""
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)


def artifacts(seed: int = 1) -> RunArtifacts:
    actor = random_actor_bytes(seed, eval_mean_return=-155.5)
    return RunArtifacts.from_directory(_write(actor))


# The run directories `artifacts()` writes, removed when the test process exits (the tests that use them have no
# tmp_path of their own to put them in).
_RUN_DIRECTORIES = tempfile.TemporaryDirectory(prefix="ddpg-test-runs-")


def _write(actor: bytes) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="run-", dir=_RUN_DIRECTORIES.name))
    (directory / "actor.safetensors").write_bytes(actor)
    (directory / "config.json").write_text('{"seed": 3}\n')
    (directory / "rewards.png").write_bytes(b"\x89PNG not really")
    return directory


def logged_run(store: tuple[str, str], run_artifacts: RunArtifacts | None = None, **kwargs: object) -> MlflowTracker:
    uri, artifact_root = store
    tracker = MlflowTracker(uri, experiment_name="test", artifact_location=artifact_root, **kwargs)  # type: ignore[arg-type]
    tracker.start(CONFIG)
    records.feed(tracker)
    tracker.finish(run_artifacts or artifacts())
    tracker.close()
    return tracker


def test_a_run_records_params_metrics_by_env_step_and_artifacts(store: tuple[str, str], tmp_path: Path) -> None:
    run_artifacts = artifacts()
    tracker = logged_run(store, run_artifacts, run_name="job-7", tags={"job_id": "7"})

    assert tracker.disabled_reason is None
    assert tracker.run_id is not None
    client = _mlflow_client(tracking_uri=store[0])
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "job-7"
    assert client.get_experiment(run.info.experiment_id).name == "test"
    assert run.data.params == {key: str(value) for key, value in CONFIG.items()}
    assert run.data.tags["job_id"] == "7"
    actor = run_artifacts.files["actor.safetensors"]
    assert run.data.tags[ACTOR_SHA256_TAG] == hashlib.sha256(actor).hexdigest()

    def history(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, key)]  # type: ignore[arg-type]

    episodes, evaluations = records.episodes(), records.evaluations()
    assert history(EPISODE_RETURN) == [(e.env_steps, e.episode_return) for e in episodes]
    assert history(EPISODE_AVG_RETURN_10) == [(e.env_steps, e.avg_return_10) for e in episodes]
    assert history(EVAL_MEAN_RETURN) == [(e.env_steps, e.mean_return) for e in evaluations]
    assert history(EVAL_STD_RETURN) == [(e.env_steps, e.std_return) for e in evaluations]
    assert history(EXPORTED_EVAL_MEAN_RETURN) == [(episodes[-1].env_steps, -155.5)]

    names = sorted(info.path for info in client.list_artifacts(tracker.run_id))
    assert names == ["actor.onnx", "actor.safetensors", "config.json", "rewards.png"]
    downloaded = Path(client.download_artifacts(tracker.run_id, "", str(tmp_path / "download")))
    for name, content in run_artifacts.files.items():
        assert (downloaded / name).read_bytes() == content, name
    assert (
        read_onnx_metadata((downloaded / "actor.onnx").read_bytes())["source_sha256"]
        == hashlib.sha256(actor).hexdigest()
    )


@pytest.mark.parametrize(("outcome", "status"), [("failed", "FAILED"), ("cancelled", "KILLED")])
def test_close_records_how_the_run_ended(store: tuple[str, str], outcome, status: str) -> None:
    tracker = MlflowTracker(store[0], experiment_name="test", artifact_location=store[1])
    tracker.start(CONFIG)
    tracker.close(outcome)
    tracker.close()  # a second close changes nothing
    assert _mlflow_client(tracking_uri=store[0]).get_run(tracker.run_id).info.status == status  # type: ignore[arg-type]


def test_runs_share_the_experiment(store: tuple[str, str]) -> None:
    first, second = logged_run(store), logged_run(store)
    client = _mlflow_client(tracking_uri=store[0])
    assert first.run_id != second.run_id
    experiments = {client.get_run(r).info.experiment_id for r in (first.run_id, second.run_id) if r}
    assert len(experiments) == 1


def test_from_env_needs_the_tracking_uri() -> None:
    assert MlflowTracker.from_env({}) is None
    assert MlflowTracker.from_env({"MLFLOW_TRACKING_URI": "  "}) is None
    tracker = MlflowTracker.from_env({"MLFLOW_TRACKING_URI": "sqlite:///x.db"}, run_name="r")
    assert tracker is not None and tracker.experiment_name == "ddpg" and tracker.run_name == "r"
    named = MlflowTracker.from_env({"MLFLOW_TRACKING_URI": "sqlite:///x.db", "MLFLOW_EXPERIMENT_NAME": "pendulum"})
    assert named is not None and named.experiment_name == "pendulum"


def test_an_unreachable_server_disables_the_tracker_within_seconds(http_defaults_unset: None) -> None:
    tracker = MlflowTracker(DOWN_SERVER)
    started = time.monotonic()

    tracker.start(CONFIG)
    records.feed(tracker)
    tracker.finish(artifacts())
    tracker.close("finished")

    elapsed = time.monotonic() - started
    # MLflow's own defaults (7 retries, exponential backoff) would take minutes here.
    assert elapsed < 10, f"a down server cost {elapsed:.1f} s"
    assert tracker.run_id is None
    assert tracker.disabled_reason is not None
    assert "starting an MLflow run at http://127.0.0.1:9 failed" in tracker.disabled_reason
    assert "\n" not in tracker.disabled_reason


def test_a_store_failure_midway_disables_without_raising(store: tuple[str, str], monkeypatch) -> None:
    tracker = MlflowTracker(store[0], experiment_name="test", artifact_location=store[1])
    tracker.start(CONFIG)

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr("mlflow.MlflowClient.log_batch", broken)
    records.feed(tracker)
    tracker.finish(artifacts())
    monkeypatch.undo()
    tracker.close()

    assert tracker.disabled_reason == "logging episode 0 failed: ConnectionError: connection reset by peer"
    # The run is not left RUNNING: it is marked failed on close.
    assert _mlflow_client(tracking_uri=store[0]).get_run(tracker.run_id).info.status == "FAILED"  # type: ignore[arg-type]


def test_without_mlflow_installed_the_tracker_disables_and_the_alias_raises(
    store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as in an install without the `mlflow` extra
    tracker = MlflowTracker(store[0])
    tracker.start(CONFIG)
    records.feed(tracker)
    tracker.close()
    assert tracker.disabled_reason == (
        "MLFLOW_TRACKING_URI is set but mlflow is not installed (pip install 'ddpg-policy-service[mlflow]')"
    )
    with pytest.raises(TrackingError, match="mlflow is not installed"):
        set_champion_alias(store[0], "pendulum", "0123456789abcdef0123456789abcdef")


def test_bound_http_retries_keeps_an_operators_values() -> None:
    environ = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5"}
    bound_http_retries(environ)
    assert environ == {**HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5"}


def test_champion_alias_points_at_the_promoted_runs_actor(store: tuple[str, str]) -> None:
    uri = store[0]
    first, second = logged_run(store, artifacts(1)), logged_run(store, artifacts(2))
    assert first.run_id and second.run_id
    client = _mlflow_client(tracking_uri=uri, registry_uri=uri)

    assert set_champion_alias(uri, "pendulum", first.run_id) == "1"
    champion = client.get_model_version_by_alias("pendulum", CHAMPION_ALIAS)
    assert (str(champion.version), champion.run_id) == ("1", first.run_id)
    assert champion.source == f"runs:/{first.run_id}/actor.safetensors"

    assert set_champion_alias(uri, "pendulum", second.run_id) == "2"
    assert client.get_model_version_by_alias("pendulum", CHAMPION_ALIAS).run_id == second.run_id
    # Promoting the first run back reuses its version rather than registering a third.
    assert set_champion_alias(uri, "pendulum", first.run_id) == "1"
    assert str(client.get_model_version_by_alias("pendulum", CHAMPION_ALIAS).version) == "1"
    assert len(client.search_model_versions("name='pendulum'")) == 2


def test_champion_alias_refuses_a_run_without_the_actor(store: tuple[str, str]) -> None:
    tracker = MlflowTracker(store[0], experiment_name="test", artifact_location=store[1])
    tracker.start(CONFIG)
    tracker.close()
    assert tracker.run_id
    with pytest.raises(TrackingError, match=r"has no artifact 'actor\.safetensors'"):
        set_champion_alias(store[0], "pendulum", tracker.run_id)


def test_champion_alias_rejects_a_malformed_run_id(store: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="not an MLflow run id"):
        set_champion_alias(store[0], "pendulum", "x' or name='other")


def test_champion_alias_on_a_down_server_raises_quickly(http_defaults_unset: None) -> None:
    started = time.monotonic()
    with pytest.raises(TrackingError, match="setting alias 'champion' of model 'pendulum'"):
        set_champion_alias(DOWN_SERVER, "pendulum", "0123456789abcdef0123456789abcdef")
    assert time.monotonic() - started < 10


def test_tracking_and_alias_never_import_torch(store: tuple[str, str]) -> None:
    uri, artifact_root = store
    script = f"""
import sys
from models.random_actor import random_actor_bytes
from trainer.tracking import RunArtifacts
from models.mlflow_registry import set_champion_alias
from trainer.tracking.mlflow_tracker import MlflowTracker

uri = "{uri}"
tracker = MlflowTracker(uri, artifact_location="{artifact_root}")
tracker.start({{"seed": 0}})
tracker.finish(RunArtifacts({{"actor.safetensors": random_actor_bytes(0)}}))
tracker.close()
assert tracker.disabled_reason is None, tracker.disabled_reason
set_champion_alias(uri, "pendulum", tracker.run_id)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
