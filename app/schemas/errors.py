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


# The schema of a file answered as it is (GIF, ONNX): bytes, not JSON.
BINARY_SCHEMA = {"type": "string", "format": "binary"}


def file_responses(
    media_type: str,
    description: str,
    *,
    schema: dict[str, str] | None = None,
    not_modified: bool = False,
    errors: tuple[int, ...] = (404, 422, 503),
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` of an endpoint that answers a file: 200 as `media_type` (with `schema`, if given), 304
    when it revalidates by ETag (`not_modified`), and the error shape for the `errors` statuses (by default those of
    a file of a stored row: unknown id, bad id, database not ready)."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {media_type: {} if schema is None else {"schema": schema}}, "description": description}
    }
    if not_modified:
        responses[304] = {"description": "Not modified (If-None-Match matched the ETag)."}
    return {**responses, **error_responses(*errors)}


def cancel_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` of a cancel: 401 without the key, 404 for an unknown id, 409 for work already ended."""
    return error_responses(401, 404, 409, 422, 503)


def queued_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` of a POST that queues work: 202 with `Location` (the `what`'s URL), and the errors of a
    JSON body (400: a body that is not even text, which FastAPI cannot decode before parsing it) and a full queue."""
    return {
        202: {
            "description": f"Queued; `Location` is the {what}'s URL.",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    }


def json_request_body(model: type[BaseModel]) -> dict[str, object]:
    """`openapi_extra` documenting a hand-parsed JSON body with a pydantic model's schema."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
