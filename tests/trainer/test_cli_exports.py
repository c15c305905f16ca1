"""The CLI's ways out for a policy and a run: `export-onnx`, `--tensorboard`, and MLflow by environment variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.policy import NumpyActor
from tests.processes import run_process
from tests.trainer.cli_run import FAST_TRAIN


def _trainer(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_process(
        [sys.executable, "-m", "trainer", *args], cwd=cwd, env={**os.environ, **(env or {})}, timeout=240
    )


def _onnx_actions(path: Path, observations: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (action,) = session.run(["action"], {"observation": observations})
    return np.asarray(action)


def test_export_onnx_matches_the_served_actor(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.onnx"
    proc = _trainer("export-onnx", str(trained / "actor.safetensors"), str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    observations = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], size=(500, 3)).astype(np.float32)
    expected = NumpyActor.from_file(trained / "actor.safetensors").act(observations)
    np.testing.assert_allclose(_onnx_actions(out, observations), expected, atol=1e-5)
    # The training run writes the same model next to the weights.
    assert (trained / "actor.onnx").read_bytes() == out.read_bytes()


def test_export_onnx_names_a_bad_file_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "actor.safetensors"
    bad.write_bytes(b"\x80\x04not a safetensors file")
    proc = _trainer("export-onnx", str(bad), str(tmp_path / "out.onnx"), cwd=tmp_path)
    assert proc.returncode == 1 and "actor.safetensors" in proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_tensorboard_flag_writes_readable_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = _trainer("train", "--out", str(tmp_path / "run-a"), "--tensorboard", str(tmp_path / "tb"), *FAST_TRAIN,
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    accumulator = EventAccumulator(str(tmp_path / "tb" / "run-a"))
    accumulator.Reload()
    returns = accumulator.Scalars("episode/return")
    assert [event.step for event in returns] == [50, 100]  # env steps after each of the two episodes
    assert len(accumulator.Scalars("evaluation/mean_return")) == 2


@pytest.mark.slow
def test_mlflow_tracking_uri_makes_the_run_an_mlflow_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _trainer("train", "--out", str(tmp_path / "run-b"), "--seed", "4", *FAST_TRAIN, cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "cli-test"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cli-test")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "4"
    history = client.get_metric_history(run.info.run_id, "episode/return")
    assert [metric.step for metric in history] == [50, 100]
    artifacts = {info.path for info in client.list_artifacts(run.info.run_id)}
    assert {"actor.safetensors", "actor.onnx", "rewards.png", "config.json"} <= artifacts


def test_an_unreachable_tracking_server_does_not_stop_training(tmp_path: Path) -> None:
    proc = _trainer("train", "--out", str(tmp_path / "run-c"), *FAST_TRAIN, cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run-c" / "actor.safetensors").is_file()
    assert "127.0.0.1:9" in proc.stderr  # the tracker said why it is off
