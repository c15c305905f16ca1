"""The client's exceptions: one `ServiceError` subclass per kind of answer a caller handles differently.

Every non-2xx answer becomes a `ServiceError` carrying the service's error code and message from its one JSON
error shape (`{"error": {"code", "message", "details"}}`); network failures stay httpx's own
`httpx.TransportError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ddpg_client.results import Job


class ServiceError(Exception):
    """The service answered with an error status; `code` and `message` come from its JSON error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = [dict(d) for d in details]
        self.retry_after = retry_after


class AuthError(ServiceError):
    """401/403: the endpoint needs `Authorization: Bearer <API_KEY>` and the key is missing or wrong."""


class NotFoundError(ServiceError):
    """404: no such job or policy (or route)."""


class ValidationError(ServiceError):
    """400/422: the request was rejected; `details` name the fields at fault."""


class QueueFullError(ServiceError):
    """429: too many training jobs are queued; retry later."""


class UnavailableError(ServiceError):
    """503: e.g. no policy trained yet; `retry_after` holds the server's Retry-After in seconds, if given."""


class WaitTimeoutError(TimeoutError):
    """`wait()` gave up before the job finished; `job` is its last known state."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s")
        self.job = job
        self.timeout = timeout


_ERRORS_BY_STATUS: dict[int, type[ServiceError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    422: ValidationError,
    429: QueueFullError,
    503: UnavailableError,
}


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from this service, not worth a date parser here
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def error_from_response(response: httpx.Response) -> ServiceError:
    """The typed error for a non-2xx response, from the one JSON error shape or, failing that, the raw text."""
    status = response.status_code
    code = f"http_{status}"
    message = response.reason_phrase or "error"
    details: list[Mapping[str, Any]] = []
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        raw_details = error.get("details")
        if isinstance(raw_details, list):
            details = [d for d in raw_details if isinstance(d, dict)]
    elif isinstance(body, dict) and "detail" in body:
        # A proxy or a stock FastAPI app in front of (or instead of) the service.
        message = body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
    elif response.text.strip():
        message = response.text.strip()[:500]
    cls = _ERRORS_BY_STATUS.get(status, ServiceError)
    return cls(
        status, code, message, details=details, retry_after=_parse_retry_after(response.headers.get("retry-after"))
    )


def checked_json(response: httpx.Response) -> Any:
    """The response's JSON body, or the typed error for a non-2xx status."""
    if response.is_error:
        raise error_from_response(response)
    return response.json()
