"""A stand-in for trainer.training.train with the same callback protocol, for fast in-process worker tests.

Episode i returns -1000 + 100 * i; the exported actor's eval_mean_return is the last episode's return.
`before_episode(i)` lets a test act (request a cancel, stop the worker) at an exact point of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import make_actor_bytes


@dataclass(frozen=True)
class FakeEpisode:
    episode: int
    episode_return: float
    avg_return_10: float
    env_steps: int
    wall_time: float


@dataclass(frozen=True)
class FakeEvaluation:
    episode: int
    env_steps: int
    mean_return: float
    std_return: float
    wall_time: float


@dataclass
class FakeResult:
    actor_bytes: bytes
    stopped_early: bool


def make_fake_train(
    before_episode: Callable[[int], None] | None = None, actor: bytes | None = None
) -> Callable[[Any, Callable[[Any, Any], bool]], FakeResult]:
    def train(config: Any, callback: Callable[[Any, Any], bool]) -> FakeResult:
        last = -1000.0
        for episode in range(config.episodes):
            if before_episode is not None:
                before_episode(episode)
            last = -1000.0 + 100.0 * episode
            steps = (episode + 1) * 200
            record = FakeEpisode(episode, last, last, steps, 0.01 * (episode + 1))
            evaluation = FakeEvaluation(episode, steps, last, 1.0, 0.01 * (episode + 1)) if episode % 2 == 1 else None
            if not callback(record, evaluation):
                return FakeResult(actor or make_actor_bytes(last), stopped_early=True)
        return FakeResult(actor or make_actor_bytes(last), stopped_early=False)

    return train
