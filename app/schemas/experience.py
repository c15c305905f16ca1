"""Bodies of /models/{name}/experience: a model's recording settings, and what it has recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# At most this many transitions kept per model (the oldest chunks beyond it are deleted).
MAX_TRANSITIONS_LIMIT = 1_000_000_000
EXPLORE_SIGMA_MAX = 1.0


def _integral(value: object) -> object:
    """JSON Schema's integer includes 1000.0: take a float without a fractional part as the integer it is."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# An integer in a strict body, written as JSON Schema reads one (1000 or 1000.0; not "1000", not 1000.5).
JsonInteger = Annotated[int, BeforeValidator(_integral)]


class ExploreIn(BaseModel):
    """Exploration for a share of sessions: the policy's action plus noise, clipped to the action bounds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    noise: Literal["gaussian"] = Field("gaussian", description="Gaussian noise, drawn fresh for every step.")
    sigma: float = Field(
        gt=0,
        le=EXPLORE_SIGMA_MAX,
        allow_inf_nan=False,
        description="The noise's standard deviation as a fraction of each action dimension's half-range "
        "(high - low) / 2: 0.1 on Pendulum's [-2, 2] is 0.2.",
        examples=[0.1],
    )
    percent: float = Field(
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="The share of sessions that explore, chosen per session by a keyed hash of its id (the canary's "
        "split), so every API process agrees; a request without a session never explores.",
        examples=[50],
    )


class ExperienceIn(BaseModel):
    """Whether the model records its session steps, how many transitions it keeps, and how it explores."""

    model_config = ConfigDict(extra="forbid", strict=True)

    record: bool = Field(description="Record every session step of the model (requests without a session: never).")
    max_transitions: JsonInteger = Field(
        1_000_000,
        ge=1,
        le=MAX_TRANSITIONS_LIMIT,
        description="Keep at least this many of the newest transitions; older chunks beyond it are deleted.",
    )
    explore: ExploreIn | None = Field(None, description="Exploration while recording; null: none.")


class ExploreOut(BaseModel):
    noise: str
    sigma: float
    percent: float


class PolicyTransitions(BaseModel):
    policy_id: int | None = Field(description="The policy that served the steps; null when none is known.")
    transitions: int


class ArmReturns(BaseModel):
    """Live returns of the recorded episodes of one arm: `explore` (sessions given noise) or `policy` (the rest)."""

    arm: str
    episodes: int
    mean_return: float | None = None
    std_return: float | None = None


class ExperienceOut(BaseModel):
    """A model's recording settings and its stored experience, summed over every API process's flushes."""

    model: str
    record: bool
    max_transitions: int
    explore: ExploreOut | None
    transitions: int = Field(description="Stored transitions (after retention).")
    episodes: int = Field(description="Stored episode ends (terminated or truncated transitions).")
    chunks: int
    bytes: int = Field(description="Compressed size of the stored chunks.")
    dropped: int = Field(
        description="Transitions not recorded since the last DELETE: buffers full, or a session dropped or moved "
        "to another process before its next observation."
    )
    oldest: datetime | None = Field(description="Time of the oldest stored transition.")
    newest: datetime | None = Field(description="Time of the newest stored transition.")
    per_policy: list[PolicyTransitions]
    returns: list[ArmReturns] = Field(description="Explore and non-explore live returns, side by side.")
