"""Bodies of /jobs: a training job, its progress, its reward history and the events of its live stream.

The response models validate store rows directly, `JobOut.model_validate(job_row)`, reading them by attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, model_validator

from models.training_config import JobStatus, PromoteRule


class JobProgress(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    tracking_run_id: str | None = Field(None, description="The job's MLflow run, when the worker tracks runs.")
    tracking_error: str | None = Field(
        None, description="Why the job is not (or not wholly) in the tracker, e.g. the server was down."
    )
    model_id: int | None = Field(
        None,
        description="The model the job's policy joins (`id` in GET /models); null for a job queued before models "
        "existed, whose policy joins the model of its environment.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_a_row(cls, data: Any) -> Any:
        """A jobs row (any object) is read by attribute, except `progress`: the row keeps it in flat columns, so
        JobProgress reads them from the row itself."""
        if isinstance(data, Mapping):
            return data
        return {name: data if name == "progress" else getattr(data, name) for name in cls.model_fields}


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="Jobs matching the filter, over all pages.")
    limit: int
    offset: int


class EpisodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    episode: int = Field(description="0-based episode index.")
    episode_return: float
    avg_return_10: float = Field(description="Mean return of the last (up to) 10 episodes.")
    env_steps: int = Field(description="Cumulative environment steps.")
    wall_time: float = Field(description="Seconds since the job started training.")


class EvaluationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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


# ---- GET /jobs/{id}/events: one model per server-sent event, as a client's parser sees it ---------------------
#
# Each model is one parsed event: its `event` name, its `id` and its `data` line, a JSON text of the payload
# model. `Json[...]` describes exactly that (a string whose content is JSON of a schema) in validation mode
# only, so the event models are always documented in that mode.

EVENT_ID_PATTERN = r"^[0-9]+$"


class EpisodeEvent(BaseModel):
    """An `episode` event: one row of the reward history, as in `GET /jobs/{id}/rewards`."""

    model_config = ConfigDict(json_schema_mode_override="validation")

    event: Literal["episode"]
    id: str = Field(pattern=EVENT_ID_PATTERN, description="The event's position in the stream: 2 x episode.")
    data: Json[EpisodeOut]


class EvaluationEvent(BaseModel):
    """An `evaluation` event: one evaluation of the history, right after the episode it followed."""

    model_config = ConfigDict(json_schema_mode_override="validation")

    event: Literal["evaluation"]
    id: str = Field(pattern=EVENT_ID_PATTERN, description="The event's position in the stream: 2 x episode + 1.")
    data: Json[EvaluationOut]


class StatusEvent(BaseModel):
    """The last event, once the job has ended: the job as in `GET /jobs/{id}`; then the stream closes."""

    model_config = ConfigDict(json_schema_mode_override="validation")

    event: Literal["status"]
    # The status event sets no id of its own; a client keeps the last one it saw (the SSE rules).
    id: str | None = Field(None, pattern=EVENT_ID_PATTERN, description="The id of the last history event, if any.")
    data: Json[JobOut]


JobEvent = Annotated[EpisodeEvent | EvaluationEvent | StatusEvent, Field(discriminator="event")]
