"""What the sweep runner hooks into Ray Tune: a stopper for cancellation and a callback that keeps trial jobs true.

A trial writes its own job while it runs and completes it before its final report. The callback covers the ends
Tune decides on the driver: ASHA stopping a trial (its job is cancelled with the reason), a retry after its
process or node died (the job says so), and a trial whose retries are used up (failed, with Tune's reason). Its
writes go through the runner's `session_call`, which waits out a database outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ray import tune
from ray.tune.experiment import Trial
from sqlalchemy.orm import Session

from models.errors import one_line
from store import sweeps
from trainer.claim_loop import DatabaseGoneError
from trainer.sweeps.reports import PROGRESS, TIME_ATTR

logger = logging.getLogger(__name__)

T = TypeVar("T")
SessionCall = Callable[[Callable[[Session], T]], T]


# Tune pickles its whole setup (tuner.pkl) so an experiment could be restored; a sweep never is (a retried sweep
# starts over), and events, locks and database sessions cannot be pickled, so these hooks pickle as empty shells.
_NOT_RESTORABLE: dict[str, Any] = {}


class StopWhenSet(tune.Stopper):  # type: ignore[misc]
    """Stops the whole experiment once any of the events is set (cancelled, lease lost, runner shutting down)."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def __getstate__(self) -> dict[str, Any]:
        return _NOT_RESTORABLE

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        return any(event.is_set() for event in self._events)


class TrialJobs(tune.Callback):  # type: ignore[misc]
    """Ends trial jobs that Tune ended, on the driver, under the runner's ownership of the sweep."""

    def __init__(
        self, session_call: SessionCall[Any], sweep_id: int, *, runner_id: str, cancelled: threading.Event
    ) -> None:
        self._session_call = session_call
        self._sweep_id = sweep_id
        self._runner_id = runner_id
        self._cancelled = cancelled

    def __getstate__(self) -> dict[str, Any]:
        return _NOT_RESTORABLE

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # A trial that finished has completed its job already; one still running was stopped by Tune.
        if self._cancelled.is_set():
            self._end(trial, "cancelled", "the sweep was cancelled")
            return
        result = trial.last_result or {}
        episode, evaluation = result.get(TIME_ATTR), result.get(PROGRESS)
        shown = f"{evaluation:.1f}" if isinstance(evaluation, float) else "none"
        self._end(trial, "cancelled", f"stopped early by ASHA after episode {episode} (evaluation {shown})")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, "failed", f"trial failed after {trial.num_failures} attempt(s): {_error_of(trial)}")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        reason = _error_of(trial)
        logger.warning("sweep %d: trial %s failed (%s); Tune retries it", self._sweep_id, trial.trial_id, reason)
        try:
            self._session_call(
                lambda s: sweeps.note_trial_retry(
                    s, self._sweep_id, trial.trial_id, runner_id=self._runner_id, reason=reason
                )
            )
        except (sweeps.SweepLeaseLostError, DatabaseGoneError) as exc:
            logger.warning("sweep %d: %s", self._sweep_id, exc)

    def _end(self, trial: Trial, status: str, reason: str) -> None:
        try:
            ended = self._session_call(
                lambda s: sweeps.end_trial(
                    s, self._sweep_id, trial.trial_id, runner_id=self._runner_id, status=status, reason=reason
                )
            )
        except (sweeps.SweepLeaseLostError, DatabaseGoneError) as exc:
            # Lost lease: the sweep is another runner's now. Database gone while stopping: it ends with the runner.
            logger.warning("sweep %d: %s", self._sweep_id, exc)
            return
        if ended:
            logger.info("sweep %d: trial %s %s: %s", self._sweep_id, trial.trial_id, status, reason)


def _error_of(trial: Trial) -> str:
    """Tune's error of the trial on one line (the traceback stays in the runner's log)."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # the error file may be gone or unreadable; the reason is still worth a line
        error = None
    if error is None:
        return "unknown error"
    cause = getattr(error, "cause", None) or error
    return one_line(cause) if isinstance(cause, BaseException) else str(cause).splitlines()[0]
