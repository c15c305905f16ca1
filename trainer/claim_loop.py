"""What every long-running claimer (the job worker, the sweep runner) does around its work: wait for the database at
start, then expire stale leases, claim the oldest queued row and run it, until stopped; an unreachable database is
waited out with exponential backoff, never crash-looped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from models.errors import one_line
from store.db import create_db_engine, make_session_factory, migrate
from trainer.backoff import DB_UNAVAILABLE, Backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")
Claimed = TypeVar("Claimed")
# A write's read-back: None when the write did not land, else its result in a 1-tuple (store.landed_writes).
ReadBack = Callable[[Session], tuple[T] | None]


class Database:
    """Short-lived sessions, one per unit of work, and writes that wait out an outage."""

    def __init__(self, sessions: sessionmaker[Session], stop: threading.Event | None = None) -> None:
        self._sessions = sessions
        self._stop = stop or threading.Event()

    @classmethod
    def connect(cls, database_url: str, stop: threading.Event | None = None) -> Database:
        """A database already migrated (a Ray task of a worker that migrated it, a trial)."""
        return cls(make_session_factory(create_db_engine(database_url)), stop)

    def call(self, work: Callable[[Session], T]) -> T:
        with self._sessions() as session:
            return work(session)

    def retrying(self, what: str, work: Callable[[Session], T], *, landed: ReadBack[T] | None = None) -> T:
        """`call`, waiting out database outages with backoff; DatabaseGoneError once asked to stop.

        An attempt that failed may still have committed (the connection broke after the COMMIT left, before its
        reply came back): `landed` (store.landed_writes) reads back whether it did, before the next attempt, and
        its answer is then the result. Writes that are safe to repeat need none."""
        backoff = Backoff()
        uncertain = False
        while True:
            try:
                if uncertain and landed is not None and (found := self.call(landed)) is not None:
                    logger.info("%s: the attempt that failed had been committed", what)
                    return found[0]
                return self.call(work)
            except DB_UNAVAILABLE as exc:
                uncertain = True
                if self._stop.is_set():
                    raise DatabaseGoneError(f"database unavailable while shutting down: {one_line(exc)}") from exc
                delay = backoff.next_delay()
                logger.warning("%s: database unavailable (%s); retrying in %.1f s", what, one_line(exc), delay)
                self._stop.wait(delay)


class DatabaseGoneError(Exception):
    """A write could not wait out the outage because the process is stopping: leave the row to its lease."""


def wait_for_database(database_url: str, stop: threading.Event) -> Database | None:
    """Run the migrations (safe to race other processes), retrying while the database is unreachable; None when
    stopped first."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            migrate(database_url)
            return Database.connect(database_url, stop)
        except DB_UNAVAILABLE as exc:
            delay = backoff.next_delay()
            logger.warning("database unavailable at start (%s); retrying in %.1f s", one_line(exc), delay)
            stop.wait(delay)
    return None


def claim_loop(
    claim: Callable[[], Claimed | None],
    run: Callable[[Claimed], None],
    *,
    stop: threading.Event,
    poll_interval: float,
    once: bool = False,
    max_runs: int | None = None,
) -> int:
    """Claim (stale leases expired first, inside `claim`) and run until stopped, `once` (at most one run, and none
    when the queue is empty) or `max_runs`; returns how many ran."""
    done = 0
    backoff = Backoff()
    while not stop.is_set():
        try:
            claimed = claim()
        except DB_UNAVAILABLE as exc:
            delay = backoff.next_delay()
            logger.warning("database unavailable (%s); retrying in %.1f s", one_line(exc), delay)
            stop.wait(delay)
            continue
        backoff.reset()
        if claimed is None:
            if once:
                break
            stop.wait(poll_interval)
            continue
        run(claimed)
        done += 1
        if once or (max_runs is not None and done >= max_runs):
            break
    return done
