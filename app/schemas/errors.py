"""The one error shape of every response, and helpers that document it (and hand-parsed bodies) in OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
