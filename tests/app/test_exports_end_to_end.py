"""The ways out, as a user takes them: train over HTTP with MLflow tracking on, download the policy as ONNX, run it
in onnxruntime on Pendulum and get the return /act gives; the job is an MLflow run with its curve and the alias."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from episodes import run_episodes
from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready
from tests.app.test_end_to_end import wait_for

SEEDS = [11, 12]


@pytest.mark.slow
def test_train_download_onnx_and_match_act_with_the_run_in_mlflow(tmp_path: Path, empty_store_file: Path) -> None:
    from mlflow import MlflowClient

    store = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store_file, store)
    uri = f"sqlite:///{store}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app.log"
    env = server_env(tmp_path / "data", PORT=str(port), EMBEDDED_WORKER="true", BOOTSTRAP_JOB="false",
                     MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="e2e",
                     MLFLOW_ARTIFACT_LOCATION=(tmp_path / "artifacts").as_uri())  # fmt: skip
    with running([sys.executable, "-m", "app"], env, log_path) as process, httpx.Client(base_url=base_url) as client:
        wait_until_ready(base_url, process, log_path, path="/healthz")
        body = {"episodes": 3, "max_episode_steps": 100, "hidden_size": 32, "seed": 2, "promote": "always"}
        location = client.post("/train", json=body).headers["location"]

        def succeeded() -> dict[str, object] | None:
            job: dict[str, object] = client.get(location).json()
            assert job["status"] not in ("failed", "cancelled"), job
            return job if job["status"] == "succeeded" else None

        job = wait_for("the training job", succeeded, deadline=240, log_path=log_path)
        assert isinstance(job, dict) and job["tracking_error"] is None, job
        policy_id, run_id = job["policy_id"], job["tracking_run_id"]
        assert isinstance(run_id, str)
        wait_for("the new default", lambda: client.get("/readyz").status_code == 200, deadline=10, log_path=log_path)

        onnx_model = client.get(f"/policies/{policy_id}/actor.onnx").content
        session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])

        def onnx_policy(observation: np.ndarray) -> np.ndarray:
            batch = np.asarray(observation, dtype=np.float32).reshape(1, -1)
            return np.asarray(session.run(["action"], {"observation": batch})[0][0])

        def act_policy(observation: np.ndarray) -> np.ndarray:
            answer = client.post("/act", json={"observation": np.asarray(observation).tolist()}).json()
            assert answer["policy_id"] == policy_id
            return np.asarray(answer["action"], dtype=np.float32)

        offline = [r.episode_return for r in run_episodes(onnx_policy, "Pendulum-v1", SEEDS)]
        served = [r.episode_return for r in run_episodes(act_policy, "Pendulum-v1", SEEDS)]
        np.testing.assert_allclose(offline, served, rtol=1e-3)

    client_ = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client_.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["episodes"] == "3"
    assert [m.step for m in client_.get_metric_history(run_id, "episode/return")] == [100, 200, 300]
    assert client_.get_model_version_by_alias("pendulum", "champion").run_id == run_id
