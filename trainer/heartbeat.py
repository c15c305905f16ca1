"""The running job's lease, renewed from a daemon thread so that a long episode never loses it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from models.errors import one_line
from store import jobs
from trainer.backoff import DB_UNAVAILABLE

logger = logging.getLogger(__name__)

T = TypeVar("T")
SessionCall = Callable[[Callable[[Session], T]], T]


class Heartbeat:
    """Renews the job's lease every lease/3 seconds; says when cancellation was asked or the lease was lost."""

    def __init__(self, session_call: SessionCall[bool], job_id: int, *, worker_id: str, lease_seconds: float) -> None:
        self._session_call = session_call
        self._job_id = job_id
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._done = threading.Event()
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-job-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        interval = max(self._lease_seconds / 3, 0.05)
        while not self._done.wait(interval):
            try:
                cancel = self._session_call(
                    lambda s: jobs.heartbeat(
                        s, self._job_id, worker_id=self._worker_id, lease_seconds=self._lease_seconds
                    )
                )
            except jobs.LeaseLostError as exc:
                logger.warning("job %d: %s", self._job_id, exc)
                self.lease_lost.set()
                return
            except DB_UNAVAILABLE as exc:
                logger.warning("job %d: heartbeat failed (%s); will retry", self._job_id, one_line(exc))
                continue
            if cancel:
                self.cancel_requested.set()
