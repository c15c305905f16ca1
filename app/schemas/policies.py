"""Bodies of /policies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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
