"""Bodies of /models: named models, their aliases, and rollouts with their live figures."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from models.registry_vocabulary import (
    GUARD_MAX_REGRESSION,
    GUARD_MIN_EPISODES,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    RESERVED_MODEL_NAMES,
    RolloutMode,
    RolloutStatus,
)

FLOAT32_MAX = 3.4028234663852886e38
MODEL_NAME_DESCRIPTION = "A slug: a-z, 0-9, '_' and '-', starting with a letter (not `default`)."


def _not_reserved(name: str) -> str:
    if name in RESERVED_MODEL_NAMES:
        raise ValueError(f"{name!r} is reserved (the inference protocols' name for the default model)")
    return name


# A model name in a request body (POST /models, /train, /sweeps): the registry's rule, the reserved names refused by
# the schema itself (`not`), so the document says what the server takes.
ModelName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        max_length=NAME_MAX_LENGTH,
        json_schema_extra={"not": {"enum": sorted(RESERVED_MODEL_NAMES)}},
    ),
    AfterValidator(_not_reserved),
]


# The most dimensions a Box of a model given by its spaces may have.
MAX_SPACE_DIM = 4096


class BoxIn(BaseModel):
    """A flat Box space as its bounds: `low[i] <= high[i]`, equally long. JSON has no Infinity: null is unbounded
    (observations only; every action bound must be a finite number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    low: list[float | None] = Field(min_length=1, max_length=MAX_SPACE_DIM, examples=[[-1.0, -1.0, None]])
    high: list[float | None] = Field(min_length=1, max_length=MAX_SPACE_DIM, examples=[[1.0, 1.0, None]])

    @field_validator("low", "high")
    @classmethod
    def _finite(cls, value: list[float | None]) -> list[float | None]:
        for index, bound in enumerate(value):
            if bound is not None and not (math.isfinite(bound) and abs(bound) <= FLOAT32_MAX):
                raise ValueError(f"[{index}] must be a finite float32 number, or null for unbounded")
        return value

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: list[float | None], info: ValidationInfo) -> list[float | None]:
        low = info.data.get("low")
        if low is None:
            return high
        if len(low) != len(high):
            raise ValueError(f"has {len(high)} bounds but low has {len(low)}; a Box needs one of each per dimension")
        for index, (lo, hi) in enumerate(zip(low, high, strict=True)):
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"[{index}] is {hi:g}, below low[{index}] = {lo:g}")
        return high


class ModelCreate(BaseModel):
    """A new model: a name and either the gymnasium environment its policies are trained on and serve, or, for an
    environment that lives with the clients, its observation and action spaces."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: ModelName = Field(description=MODEL_NAME_DESCRIPTION, examples=["car"])
    env_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="An installed gymnasium environment with Box observations and Box actions. Leave it out (and "
        "give `observation_space` and `action_space`) for an environment that lives with the clients: such a model "
        "serves, records and takes registered policies, but POST /train cannot train it here.",
        examples=["MountainCarContinuous-v0"],
    )
    observation_space: BoxIn | None = Field(
        None, description="Without `env_id`: the observations' Box (null bounds: unbounded)."
    )
    action_space: BoxIn | None = Field(
        None, description="Without `env_id`: the actions' Box; every bound finite (the actor scales into it)."
    )

    @field_validator("action_space")
    @classmethod
    def _bounded_actions(cls, value: BoxIn | None) -> BoxIn | None:
        if value is not None:
            for side in ("low", "high"):
                bounds = getattr(value, side)
                if None in bounds:
                    index = bounds.index(None)
                    raise ValueError(f"{side}[{index}] is null: action bounds must be finite numbers")
        return value

    reward_range: list[float] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description=(
            "The range [low, high] of one step's reward: a reward outside it is a 422 on /act and the stream. "
            "Omitted: the environment's where known (Pendulum-v1: [-16.2736044, 0]); null: none declared, and the "
            "rollout guard compares trimmed means instead of means."
        ),
        examples=[[-16.2736044, 0.0]],
    )

    @field_validator("reward_range")
    @classmethod
    def _finite_and_ordered(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            low, high = value
            if not all(math.isfinite(bound) and abs(bound) <= FLOAT32_MAX for bound in value):
                raise ValueError("both bounds must be finite float32 numbers")
            if low > high:
                raise ValueError("low must not exceed high")
        return value


class SpacesOut(BaseModel):
    """The environment's observation and action sizes and bounds (null where a bound is infinite or unknown)."""

    obs_dim: int
    act_dim: int
    observation_low: list[float | None]
    observation_high: list[float | None]
    action_low: list[float]
    action_high: list[float]
    reward_range: list[float] | None = Field(
        None, description="The declared range [low, high] of one step's reward; null when none is declared."
    )


class GuardIn(BaseModel):
    """Roll the rollout back when the challenger, after `min_episodes` finished live episodes, returns on average
    more than `max_regression` less than the champion; with `min_improvement`, promote it when it returns at least
    that much more than the champion over `min_episodes` finished episodes on each side (canary only: a shadow
    challenger controls no episode)."""

    # Strict, like every other body: "50" or true is a 422, not a number.
    model_config = ConfigDict(extra="forbid", strict=True)

    min_episodes: int = Field(GUARD_MIN_EPISODES, ge=1, le=1_000_000)
    max_regression: float = Field(GUARD_MAX_REGRESSION, ge=0, le=1e12, allow_inf_nan=False)
    min_improvement: float | None = Field(
        None,
        ge=0,
        le=1e12,
        allow_inf_nan=False,
        description="Promote the challenger automatically when its live return beats the champion's by at least "
        "this much, with min_episodes finished episodes on each side; null: never promote automatically.",
    )


class RolloutIn(BaseModel):
    """A trial of `challenger` (one of the model's policies) against its champion."""

    model_config = ConfigDict(extra="forbid", strict=True)

    challenger: int = Field(ge=1, le=2**31 - 1, description="The policy on trial; one of this model's versions.")
    mode: RolloutMode = Field(
        description="`canary`: `percent` of sessions (and of requests without one) get the challenger; `shadow`: "
        "every caller gets the champion, and the challenger acts on `percent` of the requests for comparison."
    )
    percent: float = Field(ge=0, le=100, allow_inf_nan=False, description="0 to 100.")
    guard: GuardIn | None = Field(
        default_factory=GuardIn, description="The automatic rollback; null for none. Defaults to 20 episodes, 50.0."
    )


class LiveReturnOut(BaseModel):
    """A policy's finished live episodes under this rollout: count, mean return and its 95% confidence interval."""

    policy_id: int
    role: str = Field(description="`champion` or `challenger`.")
    episodes: int
    mean_return: float | None = None
    std_return: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    trimmed_mean_return: float | None = Field(
        None,
        description=(
            "The mean with the lowest and highest 10% of episodes (at least one each) left out, from returns counted "
            "per 5%-wide bucket; what the guard compares when the model declares no reward range."
        ),
    )


class ShadowOut(BaseModel):
    """Shadow comparisons summed over every API process."""

    samples: int = Field(description="Observations the challenger also acted on.")
    mean_divergence: float | None = Field(None, description="Mean |champion - challenger| over action dimensions.")
    mean_latency_seconds: float | None = Field(
        None, description="Mean time from the champion's answer to the shadow's."
    )


class RolloutOut(BaseModel):
    """A rollout: its settings, its state (with when and why it ended), and its live figures."""

    id: int
    status: RolloutStatus
    mode: RolloutMode
    percent: float
    champion_id: int | None = Field(description="The champion now (while active) or when it ended.")
    challenger_id: int
    guard: GuardIn | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    live: list[LiveReturnOut]
    shadow: ShadowOut
    guard_statistic: str = Field(
        "mean",
        description=(
            "What the guard compares: `mean` (the model declares a reward range, so every reward is bounded) or "
            "`trimmed_mean_10` (no declared range: one episode cannot move it without bound)."
        ),
    )


class RolloutState(BaseModel):
    """The model's active rollout (null when none) and its recent rollouts, newest first."""

    model: str
    active: RolloutOut | None
    history: list[RolloutOut]


class ModelOut(BaseModel):
    """A model: its environment's spaces, how many policies (versions) it has, its aliases and its rollout."""

    id: int = Field(description="What jobs and policies name as their `model_id`.")
    name: str
    env_id: str | None = Field(
        description="Its gymnasium environment; null when the environment lives with the clients."
    )
    spaces: SpacesOut
    created_at: datetime
    is_default: bool = Field(description="Whether POST /act without `model` is answered by this model.")
    policies: int = Field(description="Number of stored policies (versions) of the model.")
    champion_id: int | None = Field(description="The policy POST /act serves for this model.")
    aliases: dict[str, int] = Field(description="Alias -> policy id; `challenger` while a rollout is active.")
    rollout: RolloutOut | None = Field(description="The active rollout, if any.")
    learner: str | None = Field(
        None,
        description="The status of its online learner (the live one, else the last: queued, running, cancelled, "
        "failed), or null if it never had one; GET /models/{name}/learner has the rest.",
    )


class ModelList(BaseModel):
    items: list[ModelOut]


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    policy_id: int = Field(ge=1, le=2**31 - 1, description="One of the model's policies.")
