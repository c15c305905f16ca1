"""Leased work (jobs and sweeps) as the API queues and cancels it: the answers to a full queue and to a cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from app.infra.errors import ApiError, not_found
from store.jobs import JobStateError, QueueFullError

Row = TypeVar("Row")


def queue_full(exc: QueueFullError, retry_after_seconds: int) -> ApiError:
    """429 with Retry-After: the queue already holds MAX_QUEUED_JOBS waiting jobs or sweeps."""
    return ApiError(429, "queue_full", str(exc), headers={"Retry-After": str(retry_after_seconds)})


def cancel(
    session: Session,
    what: str,
    row_id: int,
    request_cancel: Callable[[Session, int], Row],
    unknown: type[Exception],
) -> Row:
    """Cancel a queued job or sweep now, or ask its worker or runner to stop (within one episode), and commit;
    404 for an unknown id (`request_cancel` raises `unknown`), 409 for one that already ended."""
    try:
        cancelled = request_cancel(session, row_id)
    except unknown:
        raise not_found(what, row_id) from None
    except JobStateError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    session.commit()
    return cancelled
