"""Leased work, written once for every leased table (jobs, sweeps, learners): a queue whose rows one holder at a
time claims, keeps under a lease it renews, and ends.

The contract, whatever the row: enqueueing counts the queued rows and inserts under one lock (`lock_queue`), so at
most `max_queued` are ever queued; claiming takes the oldest queued row atomically (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, an immediate transaction on SQLite: store.db), so two holders never get the same row; every write of the
holder first checks, row-locked, that it still holds the row (`owned`), so a holder whose lease expired can never
overwrite the outcome; a row whose holder stopped renewing is ended by whoever notices first (`expire_stale`).

A leased table has the columns status, created_at, started_at, finished_at, heartbeat_at, lease_expires_at,
cancel_requested, error and `holder_id` (a synonym of its own holder column: store.tables.work_queues). store.jobs,
store.sweeps and store.learners are this module's users; each describes its table once as a `LeaseKind`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from models.training_config import JOB_STATUSES
from store.tables.base import utcnow
from store.tables.work_queues import Job, Learner, Sweep

# Fixed key for the advisory lock that makes "count queued, then insert" atomic across API replicas.
ENQUEUE_LOCK_KEY = 0x6464_7067_656E_71  # "ddpgenq"
MAX_ERROR_CHARS = 4000

# The leased tables. A new one joins here (and gets its `holder_id` synonym in store.tables.work_queues).
Leased = TypeVar("Leased", Job, Sweep, Learner)


class QueueFullError(Exception):
    """As many rows of this kind are queued as the limit allows; try later (HTTP 429)."""


class LeaseStateError(Exception):
    """The row is not in a state that allows the operation (HTTP 409)."""


@dataclass(frozen=True)
class LeaseKind(Generic[Leased]):
    """One leased table and the words its messages use."""

    table: type[Leased]
    noun: str  # "job": what a row is called in messages
    holder: str  # "worker": who holds a lease, in messages
    not_found: type[LeaseStateError]  # raised for an unknown id (also a LookupError: HTTP 404)
    lease_lost: type[LeaseStateError]  # raised when the holder no longer holds the row


def lock_queue(session: Session) -> None:
    """Hold the enqueue lock until this transaction ends: checks made after it stay true until the commit.

    Reentrant within a transaction, so a caller may lock, check, then enqueue in the same transaction. One lock for
    every leased table: enqueueing is rare, and one lock cannot be taken in two orders.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ENQUEUE_LOCK_KEY})
    else:
        # SQLite: every transaction begins IMMEDIATE (store.db), taking the database's write lock; make sure this
        # one has begun.
        session.connection()


def enqueue(session: Session, kind: LeaseKind[Leased], row: Leased, *, max_queued: int) -> Leased:
    """Insert the queued row unless `max_queued` rows of its kind are queued already (QueueFullError). Commits.

    Whatever the caller added to the session before is committed with the row, or rolled back with it.
    """
    try:
        lock_queue(session)
        table = kind.table
        queued = session.scalar(select(func.count()).select_from(table).where(table.status == "queued")) or 0
        if queued >= max_queued:
            raise QueueFullError(
                f"{queued} {kind.noun}s are already queued (the limit is {max_queued}); try again later"
            )
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return row


def list_page(
    session: Session, kind: LeaseKind[Leased], *, status: str | None, limit: int, offset: int
) -> tuple[list[Leased], int]:
    """A page of rows, newest first, optionally of one status, and the total count matching the filter."""
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
    table = kind.table
    query = select(table)
    count = select(func.count()).select_from(table)
    if status is not None:
        query = query.where(table.status == status)
        count = count.where(table.status == status)
    total = session.scalar(count) or 0
    page = session.scalars(query.order_by(table.created_at.desc(), table.id.desc()).limit(limit).offset(offset))
    return list(page), total


def claim_oldest(
    session: Session,
    kind: LeaseKind[Leased],
    *,
    holder_id: str,
    lease_seconds: float,
    prepare: Callable[[Leased], None] | None = None,
) -> Leased | None:
    """Atomically take the oldest queued row: `running` under `holder_id` with a fresh lease, after `prepare` (the
    kind's own bookkeeping) ran on it. Commits. None when nothing is queued; concurrent claimers never share a row."""
    now = utcnow()
    table = kind.table
    try:
        row = session.scalars(
            select(table)
            .where(table.status == "queued")
            .order_by(table.created_at, table.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).first()
        if row is None:
            session.rollback()
            return None
        row.status = "running"
        row.holder_id = holder_id
        row.started_at = now
        extend_lease(row, lease_seconds, now=now)
        if prepare is not None:
            prepare(row)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return row


@contextmanager
def owned(session: Session, kind: LeaseKind[Leased], row_id: int, holder_id: str) -> Iterator[Leased]:
    """Load the row locked, insist `holder_id` holds it; commit if the block succeeds, else roll back."""
    try:
        row = session.get(kind.table, row_id, with_for_update=True, populate_existing=True)
        if row is None:
            raise kind.not_found(f"{kind.noun} {row_id} not found")
        if row.status != "running" or row.holder_id != holder_id:
            raise kind.lease_lost(
                f"{kind.noun} {row_id} is {row.status} under {kind.holder} {row.holder_id}, "
                f"no longer held by {kind.holder} {holder_id}"
            )
        yield row
        session.commit()
    except BaseException:
        session.rollback()
        raise


def renew(session: Session, kind: LeaseKind[Leased], row_id: int, *, holder_id: str, lease_seconds: float) -> bool:
    """The heartbeat: extend the lease; returns whether cancellation was requested. Commits. `lease_lost` if the
    row is no longer ours."""
    with owned(session, kind, row_id, holder_id) as row:
        extend_lease(row, lease_seconds)
        return row.cancel_requested


def extend_lease(row: Job | Sweep | Learner, lease_seconds: float, *, now: datetime | None = None) -> None:
    now = now or utcnow()
    row.heartbeat_at = now
    row.lease_expires_at = now + timedelta(seconds=lease_seconds)


def finish(row: Job | Sweep | Learner, status: str, *, now: datetime | None = None) -> None:
    """End the row `status` (its error, if any, is the caller's to set): no lease any more."""
    row.status = status
    row.finished_at = now or utcnow()
    row.lease_expires_at = None


def fail(row: Job | Sweep | Learner, reason: str, now: datetime | None = None) -> None:
    """End the row `failed` with a one-line reason (no stack traces: they belong in the log)."""
    row.error = trimmed(reason)
    finish(row, "failed", now=now)


def trimmed(error: str) -> str:
    return error[:MAX_ERROR_CHARS]


def expire_stale(
    session: Session,
    kind: LeaseKind[Leased],
    *,
    end: Callable[[Leased, str, datetime], None] | None = None,
    now: datetime | None = None,
) -> list[int]:
    """End every running row whose lease expired (its holder died or hung) with `end` (default: `fail`). Commits;
    returns their ids. Safe to call from any number of processes at once."""
    now = now or utcnow()
    table = kind.table
    try:
        expired = list(
            session.scalars(
                select(table)
                .where(table.status == "running", table.lease_expires_at < now)
                .order_by(table.id)
                # SKIP LOCKED: a row locked right now is being renewed or finished by its live holder.
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for row in expired:
            expires = row.lease_expires_at.isoformat() if row.lease_expires_at else "unknown"
            reason = f"{kind.holder} {row.holder_id} stopped heartbeating (lease expired at {expires})"
            (end or fail)(row, reason, now)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return [row.id for row in expired]


def request_cancel(session: Session, kind: LeaseKind[Leased], row_id: int) -> tuple[Leased, bool]:
    """Cancel a queued row now, or ask the holder of a running one to stop. The caller commits.

    Returns the row and whether it was cancelled right now (it was queued). `not_found` for an unknown id;
    LeaseStateError for a row that already ended. Each step is a conditional UPDATE, so a holder claiming the row at
    the same moment is seen as running, never overwritten. Idempotent for a running row already asked.
    """
    table = kind.table
    cancelled_now = _rowcount(
        session.execute(
            update(table)
            .where(table.id == row_id, table.status == "queued")
            .values(status="cancelled", finished_at=utcnow(), cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    )
    if not cancelled_now:
        session.execute(
            update(table)
            .where(table.id == row_id, table.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    row = session.get(table, row_id, populate_existing=True)
    if row is None:
        raise kind.not_found(f"{kind.noun} {row_id} not found")
    if row.status != "running" and not cancelled_now:
        raise LeaseStateError(f"{kind.noun} {row_id} is already {row.status}")
    return row, bool(cancelled_now)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))
