"""Run trackers: a training run mirrored to MLflow (`mlflow_tracker`) and TensorBoard (`tensorboard_tracker`).

This package imports neither backend: each tracker module imports its own, only when used, so an install
without the `mlflow` or `tensorboard` extra still trains.
"""

from trainer.tracking.artifacts import ARTIFACT_FILES, RunArtifacts
from trainer.tracking.base import (
    EPISODE_AVG_RETURN_10,
    EPISODE_RETURN,
    EVAL_MEAN_RETURN,
    EVAL_STD_RETURN,
    RunOutcome,
    RunTracker,
    TrackerGroup,
)

__all__ = [
    "ARTIFACT_FILES",
    "EPISODE_AVG_RETURN_10",
    "EPISODE_RETURN",
    "EVAL_MEAN_RETURN",
    "EVAL_STD_RETURN",
    "RunArtifacts",
    "RunOutcome",
    "RunTracker",
    "TrackerGroup",
]
