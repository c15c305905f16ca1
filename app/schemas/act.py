"""Bodies of POST /act (parsed by hand on the hot path; these models document it and define the answer)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
