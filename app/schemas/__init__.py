"""Request and response bodies of the HTTP API (pydantic), which are also its OpenAPI documentation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
PromoteRule = Literal["if_better", "always", "never"]
# The trainer's presets (trainer.config.PRESETS). Listed here because the API must not import the trainer
# (it imports torch); tests/app check that this list matches the trainer's.
PresetName = Literal["seed", "default"]


# ---- errors -----------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    field: str | None = Field(None, description="The request field at fault, e.g. `observations[2]` or `episodes`.")
    message: str = Field(description="What is wrong with it.")
    type: str | None = Field(None, description="A machine-readable kind of problem (pydantic's error type).")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `validation_error`, `not_found`.")
    message: str = Field(description="Human-readable summary.")
    details: list[ErrorDetail] = Field(default_factory=list, description="Per-field problems, if any.")


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape for the given statuses."""
    return {status: {"model": ErrorResponse} for status in statuses}


def json_request_body(model: type[BaseModel]) -> dict[str, object]:
    """`openapi_extra` documenting a hand-parsed JSON body with a pydantic model's schema."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


# ---- /act -------------------------------------------------------------------------------------------------


class ActRequest(BaseModel):
    """Exactly one of `observation` (one) or `observations` (a batch); the length must be the policy's obs_dim."""

    model_config = ConfigDict(extra="forbid")

    observation: list[float] | None = Field(
        None, description="One observation: `obs_dim` finite numbers.", examples=[[1.0, 0.0, 0.0]]
    )
    observations: list[list[float]] | None = Field(
        None, description="A batch of observations (1 to MAX_BATCH), each `obs_dim` finite numbers.", min_length=1
    )
    policy_id: int | None = Field(None, ge=1, description="A stored policy to use instead of the default one.")


class ActResponse(BaseModel):
    """The action for one observation, within the policy's action bounds."""

    action: list[float]
    policy_id: int = Field(description="The policy that computed this action.")


class ActBatchResponse(BaseModel):
    """One action per observation, in the request's order."""

    actions: list[list[float]]
    policy_id: int = Field(description="The policy that computed these actions.")


# ---- /train and /jobs -------------------------------------------------------------------------------------


class TrainRequest(BaseModel):
    """Hyperparameters of a DDPG training job: all optional, unset ones come from `preset`.

    Names are the trainer's (`python -m trainer train --help`). Static bounds are below; the server also
    enforces its configured budget (TRAIN_MAX_EPISODES, TRAIN_MAX_HIDDEN_SIZE, TRAIN_MAX_BATCH_SIZE,
    TRAIN_MAX_REPLAY_SIZE, TRAIN_MAX_EPISODE_STEPS).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    preset: PresetName = Field("default", description="`seed` reproduces the tutorial; `default` is tuned.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Random seed of the run.")
    episodes: int | None = Field(None, ge=1, le=1_000_000, description="Training episodes.")
    max_episode_steps: int | None = Field(None, ge=1, le=1_000_000, description="Steps per episode cap.")
    hidden_size: int | None = Field(None, ge=1, le=65536, description="Width of both hidden layers.")
    actor_lr: float | None = Field(None, gt=0, le=1, description="Actor learning rate.")
    critic_lr: float | None = Field(None, gt=0, le=1, description="Critic learning rate.")
    gamma: float | None = Field(None, ge=0, le=1, description="Discount factor.")
    tau: float | None = Field(None, gt=0, le=1, description="Polyak averaging factor for the target networks.")
    batch_size: int | None = Field(None, ge=1, le=1_000_000, description="Minibatch size of each update.")
    replay_size: int | None = Field(None, ge=1, le=100_000_000, description="Replay buffer capacity.")
    learning_starts: int | None = Field(None, ge=0, le=100_000_000, description="Env steps before updates start.")
    noise: Literal["ou", "gaussian"] | None = Field(None, description="Exploration noise process.")
    noise_sigma: float | None = Field(None, ge=0, le=10, description="Exploration noise scale.")
    ou_theta: float | None = Field(None, ge=0, le=1, description="Ornstein-Uhlenbeck mean reversion rate.")
    eval_every: int | None = Field(None, ge=0, le=1_000_000, description="Episodes between evaluations (0: at end).")
    eval_episodes: int | None = Field(None, ge=1, le=100, description="Episodes per evaluation.")
    export: Literal["best", "last"] | None = Field(None, description="Export the best-evaluated or the last actor.")
    random_steps: int | None = Field(
        None, ge=0, le=100_000_000, description="First env steps with uniformly random actions."
    )
    update_every: int | None = Field(None, ge=1, le=10_000, description="Env steps between gradient updates.")
    promote: PromoteRule = Field(
        "if_better",
        description="`if_better`: becomes the default only if it evaluates better than the current default; "
        "`always`; `never`.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_json_numbers(cls, value: object, info: ValidationInfo) -> object:
        # pydantic's lax mode would read `true` as 1 and "20" as 20: a hyperparameter must be a JSON number.
        if info.field_name in _NUMERIC_TRAIN_FIELDS and isinstance(value, bool | str):
            raise ValueError(f"must be a number, got {'a boolean' if isinstance(value, bool) else 'a string'}")
        return value

    def trainer_config(self) -> dict[str, Any]:
        """The job's config as stored for the worker: the preset plus only the fields the client set."""
        return self.model_dump(exclude={"promote"}, exclude_none=True)


_NUMERIC_TRAIN_FIELDS = frozenset(
    name for name, info in TrainRequest.model_fields.items() if info.annotation in (int | None, float | None)
)


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


# ---- /policies --------------------------------------------------------------------------------------------


class PolicyOut(BaseModel):
    """A stored policy: its metadata and evaluation score (the weights are at /policies/{id}/weights)."""

    id: int
    created_at: datetime
    sha256: str
    env_id: str
    obs_dim: int
    act_dim: int
    eval_mean_return: float | None = None
    source_job_id: int | None = None
    is_default: bool = Field(description="Whether /act uses this policy when no policy_id is given.")
    meta: dict[str, Any] = Field(description="The weights file's metadata (hidden_size, action bounds, config...).")


class PolicyList(BaseModel):
    items: list[PolicyOut]
    total: int
    limit: int
    offset: int


# ---- health -----------------------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    database: Literal["ok"] = "ok"
    policy_id: int = Field(description="The default policy this process is serving.")
