"""Bodies of POST /act (parsed by hand on the hot path; these models document it and define the answer)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

# What app.serving.observations takes: finite numbers within float32's range.
FLOAT32_MAX = float(np.finfo(np.float32).max)
Float32 = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Observation = Annotated[list[Float32], Field(min_length=1)]

# The parser takes exactly one of the two (an explicit null counts as absent): one branch each, the other null.
_ONE_OF_OBSERVATION_FIELDS: JsonDict = {
    "oneOf": [
        {
            "required": [given],
            "properties": {given: {"type": "array"}, other: {"type": "null"}},
        }
        for given, other in (("observation", "observations"), ("observations", "observation"))
    ]
}


class ActRequest(BaseModel):
    """Exactly one of `observation` (one) or `observations` (a batch); the length must be the policy's obs_dim."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_OF_OBSERVATION_FIELDS)

    observation: Observation | None = Field(
        None, description="One observation: `obs_dim` finite numbers.", examples=[[1.0, 0.0, 0.0]]
    )
    observations: list[Observation] | None = Field(
        None, description="A batch of observations (1 to MAX_BATCH), each `obs_dim` finite numbers.", min_length=1
    )
    policy_id: int | None = Field(
        None,
        ge=1,
        description="A stored policy to use instead of the model's champion (with `model`: one of its policies). In a "
        "session, the policy its earlier answers named: any API process then continues the episode with it.",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The named model to ask (DEFAULT_MODEL when absent).",
        examples=["pendulum"],
    )
    session: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="The client's episode id. Within a session the policy never changes until `done`: not in a "
        "canary split, not across a promotion or rollback. One `observation` per request.",
    )
    reward: Float32 | None = Field(
        None, description="The reward of the session's previous step (needs `session`); summed into its return."
    )
    done: bool | None = Field(
        None,
        description="The session's episode ended in a terminal state (gymnasium's `terminated`; needs `session`): "
        "`observation` is the final one, its return counts in the live figures, and the next request starts a new "
        "episode. A recorded transition that ends so is not bootstrapped past.",
    )
    truncated: bool | None = Field(
        None,
        description="The session's episode was cut short (gymnasium's `truncated`: a time limit, or the client "
        "stopped; needs `session`, not with `done`): it ends as with `done`, but a learner bootstraps past it.",
    )


class ActResponse(BaseModel):
    """The action for one observation, within the policy's action bounds."""

    action: list[float]
    policy_id: int = Field(description="The policy that computed this action.")


class ActBatchResponse(BaseModel):
    """One action per observation, in the request's order."""

    actions: list[list[float]]
    policy_id: int = Field(description="The policy that computed these actions.")


class StreamInfo(BaseModel):
    """Where and how to open the control-loop stream (a plain GET cannot: it needs a WebSocket upgrade)."""

    websocket: str = Field(description="The stream's path; connect with ws:// (or wss://), `?model=NAME` optional.")
    description: str
