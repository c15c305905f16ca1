"""A stand-in for trainer.training.train with the same callback protocol, for fast in-process worker tests.

Episode i returns -1000 + 100 * i; the exported actor's eval_mean_return is the last episode's return.
`before_episode(i)` lets a test act (request a cancel, stop the worker) at an exact point of the run.
"""

from __future__ import annotations

from collections.abc import Callable

from models.training_config import TrainingConfig
from tests.conftest import make_actor_bytes
from trainer.records import EpisodeRecord, EvaluationRecord, ProgressCallback, TrainingResult


def make_fake_train(
    before_episode: Callable[[int], None] | None = None, actor: bytes | None = None
) -> Callable[[TrainingConfig, ProgressCallback], TrainingResult]:
    def train(config: TrainingConfig, callback: ProgressCallback) -> TrainingResult:
        last = -1000.0
        for episode in range(config.episodes):
            if before_episode is not None:
                before_episode(episode)
            last = -1000.0 + 100.0 * episode
            steps = (episode + 1) * 200
            record = EpisodeRecord(episode, last, last, steps, 0.01 * (episode + 1))
            evaluation = EvaluationRecord(episode, steps, last, 1.0, 0.01 * (episode + 1)) if episode % 2 == 1 else None
            if not callback(record, evaluation):
                return TrainingResult(config, actor or make_actor_bytes(last), last, stopped_early=True)
        return TrainingResult(config, actor or make_actor_bytes(last), last)

    return train
