"""A lease renewed from a daemon thread, so that a long episode (or a whole Tune run) never loses it.

One class for every leased row: the caller passes the beat (one renewal, returning whether cancellation was asked:
store.jobs.heartbeat, store.sweeps.heartbeat_sweep) and the error it raises once the row is no longer held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from models.errors import one_line
from trainer.backoff import DB_UNAVAILABLE

logger = logging.getLogger(__name__)

Beat = Callable[[], bool]


class Heartbeat:
    """Calls `beat` every lease/3 seconds. `should_stop` is set when the work must stop: cancellation was asked, or
    the lease was lost (then `lease_lost` is set too). A database outage is retried at the next beat."""

    def __init__(
        self,
        beat: Beat,
        *,
        what: str,
        lease_seconds: float,
        lease_lost_error: type[Exception],
        should_stop: threading.Event | None = None,
    ) -> None:
        self._beat = beat
        self._what = what
        self._interval = max(lease_seconds / 3, 0.05)
        self._lease_lost_error = lease_lost_error
        self._done = threading.Event()
        self.should_stop = should_stop or threading.Event()
        self.lease_lost = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{what.replace(' ', '-')}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            try:
                cancel = self._beat()
            except self._lease_lost_error as exc:
                logger.warning("%s: %s", self._what, exc)
                self.lease_lost.set()
                self.should_stop.set()
                return
            except DB_UNAVAILABLE as exc:
                logger.warning("%s: heartbeat failed (%s); will retry", self._what, one_line(exc))
                continue
            if cancel:
                self.should_stop.set()
