"""A promotion moves the MLflow registry's `champion` alias to the run that trained the policy, in the registered
model of the policy's own model (MLFLOW_REGISTERED_MODEL for the default model); a dead tracking server never costs
the promotion."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from store.jobs import enqueue_job
from store.policies import register_policy
from store.registry import get_model
from store.tables.work_queues import Job
from tests.app.conftest import ApiFactory
from tests.app.factories import make_policy_bytes
from trainer.tracking import RunArtifacts
from trainer.tracking.mlflow_tracker import MlflowTracker


def _tracked_policy(api: object, weights: bytes, run_id: str, model: str | None = None) -> int:
    """A policy (of `model`, else of the default model) whose source job has the MLflow run `run_id`, as a tracked
    worker leaves them."""
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model_id = None if model is None else get_model(session, model).id  # type: ignore[union-attr]
        job = enqueue_job(session, config={"episodes": 1}, promote="never", max_queued=50)
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded", tracking_run_id=run_id))
        policy = register_policy(session, weights=weights, source_job_id=job.id, promote="never", model_id=model_id)
        session.commit()
        return policy.id


def _run_with_actor(uri: str, artifact_root: str, weights: bytes) -> str:
    tracker = MlflowTracker(uri, artifact_location=artifact_root)
    tracker.start({"seed": 0})
    tracker.finish(RunArtifacts({"actor.safetensors": weights}))
    tracker.close()
    assert tracker.run_id is not None and tracker.disabled_reason is None
    return tracker.run_id


def test_promote_points_the_champion_alias_at_the_policys_run(
    make_api: ApiFactory, store: tuple[str, str], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    uri, artifact_root = store
    api = make_api(mlflow_tracking_uri=uri, mlflow_registered_model="pendulum")
    runs, policy_ids = [], []
    for seed in (1, 2):
        weights = make_policy_bytes(seed)
        runs.append(_run_with_actor(uri, artifact_root, weights))
        policy_ids.append(_tracked_policy(api, weights, runs[-1]))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for run_id, policy_id in zip(runs, policy_ids, strict=True):
        assert api.client.post(f"/policies/{policy_id}/promote").status_code == 200
        assert client.get_model_version_by_alias("pendulum", "champion").run_id == run_id


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9"])
def test_a_dead_tracking_server_does_not_stop_a_promotion(make_api: ApiFactory, uri: str) -> None:
    api = make_api(mlflow_tracking_uri=uri)
    policy_id = _tracked_policy(api, make_policy_bytes(3), "0123456789abcdef0123456789abcdef")
    response = api.client.post(f"/policies/{policy_id}/promote")
    assert response.status_code == 200 and response.json()["is_default"]
    assert api.client.post("/act", json={"observation": [1.0, 0.0, 0.0]}).json()["policy_id"] == policy_id


def _champion_run(uri: str, registered_model: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        return client.get_model_version_by_alias(registered_model, "champion").run_id
    except MlflowException:  # no such registered model, or no such alias yet
        return None


def test_the_default_model_moves_the_alias_of_mlflow_registered_model(
    make_api: ApiFactory, store: tuple[str, str]
) -> None:
    uri, artifact_root = store
    api = make_api(mlflow_tracking_uri=uri, mlflow_registered_model="ddpg-actor")
    weights = make_policy_bytes(4)
    run_id = _run_with_actor(uri, artifact_root, weights)
    policy_id = _tracked_policy(api, weights, run_id)
    assert api.client.post(f"/policies/{policy_id}/promote").status_code == 200
    assert _champion_run(uri, "ddpg-actor") == run_id
    assert _champion_run(uri, "pendulum") is None  # the default model's own name is not its registered model


def test_each_named_model_moves_the_alias_of_its_own_registered_model(
    make_api: ApiFactory, store: tuple[str, str]
) -> None:
    """Every way to promote (the policy, the champion alias, the rollout) moves the alias of the model's own name."""
    uri, artifact_root = store
    api = make_api(mlflow_tracking_uri=uri, mlflow_registered_model="ddpg-actor")
    assert api.client.post("/models", json={"name": "arm", "env_id": "Pendulum-v1"}).status_code == 201
    runs, policy_ids = [], []
    for seed in (5, 6, 7):
        weights = make_policy_bytes(seed)
        runs.append(_run_with_actor(uri, artifact_root, weights))
        policy_ids.append(_tracked_policy(api, weights, runs[-1], model="arm"))

    assert api.client.post(f"/policies/{policy_ids[0]}/promote").status_code == 200
    assert _champion_run(uri, "arm") == runs[0]
    body = {"policy_id": policy_ids[1]}
    assert api.client.put("/models/arm/aliases/champion", json=body).status_code == 200
    assert _champion_run(uri, "arm") == runs[1]
    trial = {"challenger": policy_ids[2], "mode": "canary", "percent": 10}
    assert api.client.put("/models/arm/rollout", json=trial).status_code == 200
    assert _champion_run(uri, "arm") == runs[1]  # a trial is not a promotion
    assert api.client.post("/models/arm/rollout/promote").status_code == 200
    assert _champion_run(uri, "arm") == runs[2]
    assert _champion_run(uri, "ddpg-actor") is None  # the default model's registered model was never touched


def test_promoting_an_untracked_policy_says_why_the_alias_stays(
    make_api: ApiFactory, store: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    uri, artifact_root = store
    api = make_api(mlflow_tracking_uri=uri, mlflow_registered_model="pendulum")
    tracked = make_policy_bytes(4)
    tracked_id = _tracked_policy(api, tracked, _run_with_actor(uri, artifact_root, tracked))
    assert api.client.post(f"/policies/{tracked_id}/promote").status_code == 200
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        untracked_id = register_policy(session, weights=make_policy_bytes(5), promote="never").id
        session.commit()
    with caplog.at_level("WARNING", logger="app.infra.mlflow_alias"):
        assert api.client.post(f"/policies/{untracked_id}/promote").status_code == 200
    assert f"policy {untracked_id} is pendulum's champion, but it has no MLflow run" in caplog.text
    assert _champion_run(uri, "pendulum") is not None  # the previous version, named in the warning
