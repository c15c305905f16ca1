"""What a training run reports: one record per episode and per evaluation, and the result.

Torch-free, so the job worker, the trackers and tests can use them without importing the trainer's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from models.training_config import TrainingConfig


@dataclass(frozen=True)
class EpisodeRecord:
    episode: int  # 0-based
    episode_return: float
    avg_return_10: float  # mean of the last (up to) 10 episode returns, this one included
    env_steps: int  # cumulative
    wall_time: float  # seconds since train() started


@dataclass(frozen=True)
class EvaluationRecord:
    episode: int  # the episode after which it ran
    env_steps: int
    mean_return: float
    std_return: float
    wall_time: float


# Called after every episode with that episode and the evaluation that just ran (if any); False stops training.
ProgressCallback = Callable[[EpisodeRecord, EvaluationRecord | None], bool]


@dataclass
class TrainingResult:
    config: TrainingConfig
    actor_bytes: bytes  # safetensors: ddpg-actor/1, or policy-mlp/1 with observation normalization
    eval_mean_return: float | None  # of the exported actor
    episodes: list[EpisodeRecord] = field(default_factory=list)
    evaluations: list[EvaluationRecord] = field(default_factory=list)
    stopped_early: bool = False
