"""The trackers on a real (tiny) training run, wired as the CLI and the worker wire them."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.training_config import make_config
from trainer.records import EpisodeRecord, EvaluationRecord
from trainer.tracking import EPISODE_RETURN, EVAL_MEAN_RETURN, RunArtifacts, TrackerGroup
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.tensorboard_tracker import TensorBoardTracker
from trainer.training import train

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

TINY = {
    "episodes": 3,
    "max_episode_steps": 40,
    "hidden_size": 8,
    "batch_size": 16,
    "learning_starts": 20,
    "random_steps": 20,
    "eval_every": 2,
    "eval_episodes": 1,
}


def test_a_training_run_feeds_both_trackers(tmp_path: Path, store: tuple[str, str]) -> None:
    # The readers are imported here, not while every pytest runner collects this module (0.7 CPU s each).
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config("default", **TINY)
    uri, artifact_root = store
    mlflow_tracker = MlflowTracker(uri, artifact_location=artifact_root)
    trackers = TrackerGroup([mlflow_tracker, TensorBoardTracker(tmp_path / "tb")])

    def callback(episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> bool:
        trackers.log_progress(episode, evaluation)
        return True

    trackers.start(config.to_dict())
    try:
        result = train(config, callback)
        trackers.finish(
            RunArtifacts.from_training(result.actor_bytes, config.to_dict(), result.episodes, result.evaluations)
        )
    except BaseException:
        trackers.close("failed")
        raise
    trackers.close("finished")

    assert trackers.dropped == {} and mlflow_tracker.disabled_reason is None
    steps = [e.env_steps for e in result.episodes]
    assert steps == [40, 80, 120]
    client = MlflowClient(tracking_uri=uri)
    assert mlflow_tracker.run_id is not None
    assert [m.step for m in client.get_metric_history(mlflow_tracker.run_id, EPISODE_RETURN)] == steps
    assert [m.step for m in client.get_metric_history(mlflow_tracker.run_id, EVAL_MEAN_RETURN)] == [
        e.env_steps for e in result.evaluations
    ]
    assert client.get_run(mlflow_tracker.run_id).data.params["hidden_size"] == "8"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [s.step for s in events.Scalars(EPISODE_RETURN)] == steps
