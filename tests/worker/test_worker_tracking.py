"""A job as an MLflow run: run id on the job, metrics by env step, files, the champion alias; a dead server is
recorded on the job and costs nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import jobs
from tests.worker.fake_training import make_fake_train
from tests.worker.test_worker_inprocess import _enqueue, _job, _options
from trainer.worker import Worker


@pytest.fixture
def tracking_env(store: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri, _artifacts = store
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts under ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "worker-test")
    monkeypatch.setenv("MLFLOW_REGISTERED_MODEL", "pendulum")
    return uri


def test_each_job_is_a_run_and_the_promoted_one_is_champion(
    database_url: str, sessions: sessionmaker[Session], tracking_env: str
) -> None:
    from mlflow import MlflowClient

    first = _enqueue(sessions, {"episodes": 3}, promote="always")
    second = _enqueue(sessions, {"episodes": 2}, promote="never")
    assert Worker(_options(database_url, max_jobs=2), train=make_fake_train()).run() == 0
    client = MlflowClient(tracking_uri=tracking_env, registry_uri=tracking_env)
    runs = {}
    for job_id in (first, second):
        job = _job(sessions, job_id)
        assert job.status == "succeeded" and job.tracking_error is None
        assert job.tracking_run_id is not None
        runs[job_id] = client.get_run(job.tracking_run_id)
        assert runs[job_id].info.status == "FINISHED"
        assert runs[job_id].data.tags["job_id"] == str(job_id)
    steps = [metric.step for metric in client.get_metric_history(runs[first].info.run_id, "episode/return")]
    assert steps == [200, 400, 600]  # env steps, as the fake trainer counts them
    files = {info.path for info in client.list_artifacts(runs[first].info.run_id)}
    assert {"actor.safetensors", "actor.onnx", "rewards.png", "config.json"} <= files
    # Only the job whose policy now serves moved the alias.
    champion = client.get_model_version_by_alias("pendulum", "champion")
    assert champion.run_id == runs[first].info.run_id


def test_a_dead_tracking_server_is_noted_on_the_job_which_still_succeeds(
    database_url: str, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    job_id = _enqueue(sessions, {"episodes": 2})
    assert Worker(_options(database_url, once=True), train=make_fake_train()).run() == 0
    job = _job(sessions, job_id)
    assert job.status == "succeeded" and job.policy_id is not None
    assert job.tracking_run_id is None
    assert job.tracking_error is not None and "127.0.0.1:9" in job.tracking_error
    with sessions() as session:
        assert len(jobs.episode_history(session, job_id)) == 2  # nothing lost from our own database


def test_without_a_tracking_uri_nothing_is_tracked(database_url: str, sessions: sessionmaker[Session]) -> None:
    job_id = _enqueue(sessions, {"episodes": 1})
    assert Worker(_options(database_url, once=True), train=make_fake_train()).run() == 0
    job = _job(sessions, job_id)
    assert (job.status, job.tracking_run_id, job.tracking_error) == ("succeeded", None, None)


def test_each_models_promotion_moves_the_alias_of_its_own_registered_model(
    database_url: str, sessions: sessionmaker[Session], tracking_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from store.registry import create_model

    # DEFAULT_MODEL's registered model is MLFLOW_REGISTERED_MODEL; any other model's is its own name.
    monkeypatch.setenv("MLFLOW_REGISTERED_MODEL", "served-policy")
    default_job = _enqueue(sessions, {"episodes": 1}, promote="always")
    with sessions() as session:
        second = create_model(session, name="second", env_id="Pendulum-v1", spaces={"obs_dim": 3, "act_dim": 1})
        session.commit()
        second_job = jobs.enqueue_job(
            session, config={"episodes": 1}, promote="always", max_queued=50, model_id=second.id
        ).id
    assert Worker(_options(database_url, max_jobs=2), train=make_fake_train()).run() == 0
    client = MlflowClient(tracking_uri=tracking_env, registry_uri=tracking_env)
    for registered, job_id in (("served-policy", default_job), ("second", second_job)):
        job = _job(sessions, job_id)
        assert job.status == "succeeded" and job.tracking_error is None, job.tracking_error
        assert client.get_model_version_by_alias(registered, "champion").run_id == job.tracking_run_id
