"""Bodies of /policies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, model_validator

from models.policy_types import ORIGIN_TRAINED

# The validation context key that says which policy is the default: `PolicyOut.model_validate(row, context=...)`.
DEFAULT_POLICY_ID = "default_policy_id"


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
    model_id: int | None = Field(None, description="The model this policy is a version of (`id` in GET /models).")
    is_default: bool = Field(description="Whether /act uses this policy when no policy_id is given.")
    origin: str = Field(
        ORIGIN_TRAINED,
        description="Where the policy comes from: `trained` (this service's trainer), or the importer's tag "
        "(`sb3:TD3 2.x`, `cleanrl`, `onnx`, ...). From the weights file's metadata; `trained` for files without one.",
        examples=[ORIGIN_TRAINED],
    )
    meta: dict[str, Any] = Field(
        description="The weights file's metadata (format, layer sizes, action bounds, normalization, config...)."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_a_row(cls, data: Any, info: ValidationInfo) -> Any:
        """A policies row (any object) is read by attribute, except `is_default`: which policy is the default is
        the serving state's to say, so the caller passes its id as `context={DEFAULT_POLICY_ID: ...}`."""
        if isinstance(data, Mapping):
            return data
        if not isinstance(info.context, Mapping) or DEFAULT_POLICY_ID not in info.context:
            raise TypeError(f"validating a policies row needs context={{{DEFAULT_POLICY_ID!r}: <id or None>}}")
        is_default = data.id == info.context[DEFAULT_POLICY_ID]
        derived = {"is_default": is_default, "origin": _origin(data.meta)}
        return {name: derived[name] if name in derived else getattr(data, name) for name in cls.model_fields}


def _origin(meta: Any) -> str:
    """The metadata's `origin`: `ddpg-actor/1` files (and rows stored before origins were recorded) have none."""
    origin = meta.get("origin") if isinstance(meta, Mapping) else None
    return origin if isinstance(origin, str) and origin else ORIGIN_TRAINED


class PolicyList(BaseModel):
    items: list[PolicyOut]
    total: int
    limit: int
    offset: int
