"""Bodies of /jobs: a training job, its progress and its reward history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from models.training_config import JobStatus, PromoteRule


class JobProgress(BaseModel):
    episodes_done: int = Field(description="Episodes finished so far.")
    episodes_total: int | None = Field(None, description="Episodes the job will run (known once it starts).")
    env_steps: int = Field(description="Environment steps so far.")
    last_return: float | None = Field(None, description="Return of the latest episode.")
    best_eval_return: float | None = Field(None, description="Best mean evaluation return so far.")


class JobOut(BaseModel):
    """A training job and its progress."""

    id: int
    status: JobStatus
    promote: PromoteRule
    config: dict[str, Any] = Field(description="The hyperparameters as submitted (preset plus overrides).")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: JobProgress
    policy_id: int | None = Field(None, description="The policy this job produced, once it succeeded.")
    error: str | None = Field(None, description="Why the job failed, if it did.")


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="Jobs matching the filter, over all pages.")
    limit: int
    offset: int


class EpisodeOut(BaseModel):
    episode: int = Field(description="0-based episode index.")
    episode_return: float
    avg_return_10: float = Field(description="Mean return of the last (up to) 10 episodes.")
    env_steps: int = Field(description="Cumulative environment steps.")
    wall_time: float = Field(description="Seconds since the job started training.")


class EvaluationOut(BaseModel):
    episode: int = Field(description="The episode after which the evaluation ran.")
    env_steps: int
    mean_return: float
    std_return: float
    wall_time: float


class RewardsOut(BaseModel):
    """The reward history of a job so far (also while it runs)."""

    job_id: int
    status: JobStatus
    episodes: list[EpisodeOut]
    evaluations: list[EvaluationOut]
