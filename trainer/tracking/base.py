"""What every run tracker offers, and a group that feeds several from the training callback.

A tracker mirrors one training run somewhere else (an MLflow run, TensorBoard event files). Its one rule: it
never stops training. A tracker whose backend fails logs one warning, disables itself, and keeps the reason in
`disabled_reason` for the caller to store; every later call is then a no-op.

The records are Protocols rather than the training loop's dataclasses, so that any trainer's records fit (the
worker's tests run a fake one), as in `trainer.worker`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, TypeVar

from models.errors import one_line
from trainer.tracking.artifacts import RunArtifacts

logger = logging.getLogger(__name__)

T = TypeVar("T")

# One name per series, the same in every backend, so a TensorBoard chart and an MLflow chart line up.
EPISODE_RETURN = "episode/return"
EPISODE_AVG_RETURN_10 = "episode/avg_return_10"
EVAL_MEAN_RETURN = "evaluation/mean_return"
EVAL_STD_RETURN = "evaluation/std_return"

# How a run ended: succeeded, raised, or was stopped on request (a cancelled job, Ctrl-C, a worker shutdown).
RunOutcome = Literal["finished", "failed", "cancelled"]


class EpisodeLike(Protocol):
    """The training loop's EpisodeRecord as trackers read it."""

    @property
    def episode(self) -> int: ...
    @property
    def episode_return(self) -> float: ...
    @property
    def avg_return_10(self) -> float: ...
    @property
    def env_steps(self) -> int: ...


class EvaluationLike(Protocol):
    """The training loop's EvaluationRecord as trackers read it."""

    @property
    def episode(self) -> int: ...
    @property
    def env_steps(self) -> int: ...
    @property
    def mean_return(self) -> float: ...
    @property
    def std_return(self) -> float: ...


class RunTracker(Protocol):
    """One training run mirrored to a tracking backend; the x axis of every series is cumulative env steps.

    Call order: `start` once, then `log_episode` / `log_evaluation` as the callback reports them, then `finish`
    with the run's files when training produced an actor, and `close` in every case (a `finally`). No method
    raises on a backend failure; see `disabled_reason`.
    """

    @property
    def disabled_reason(self) -> str | None:
        """Why the tracker stopped recording (backend unreachable, write failed), or None while it works."""
        ...

    def start(self, config: Mapping[str, Any]) -> None:
        """Open the run and record the training config."""
        ...

    def log_episode(self, episode: EpisodeLike) -> None: ...

    def log_evaluation(self, evaluation: EvaluationLike) -> None: ...

    def finish(self, artifacts: RunArtifacts) -> None:
        """Attach the run's files (actor, ONNX, plot, config)."""
        ...

    def close(self, outcome: RunOutcome = "finished") -> None:
        """End the run; safe to call more than once."""
        ...


class GuardedTracker:
    """The never-raise rule, shared by the trackers: run a backend call, or disable on its first failure."""

    def __init__(self) -> None:
        self._disabled_reason: str | None = None

    @property
    def disabled_reason(self) -> str | None:
        return self._disabled_reason

    @property
    def enabled(self) -> bool:
        return self._disabled_reason is None

    def disable(self, reason: str) -> None:
        """Stop recording; the first reason is kept (later ones are consequences of it)."""
        if self._disabled_reason is None:
            self._disabled_reason = reason
            logger.warning("%s disabled: %s; training continues without it", type(self).__name__, reason)

    def guarded(self, what: str, call: Callable[[], T]) -> T | None:
        """`call()`, or None (and the tracker disabled) when it raises or the tracker already is."""
        if self._disabled_reason is not None:
            return None
        try:
            return call()
        # Deliberately broad: a tracking backend can fail in any way (HTTP, SQL, disk, protobuf, a bug in a
        # plugin), and no such failure may end a training run.
        except Exception as exc:
            self.disable(f"{what} failed: {one_line(exc)}")
            return None


class TrackerGroup:
    """Several trackers fed as one; a tracker that raises anyway (a third-party one) is dropped with a warning."""

    def __init__(self, trackers: Iterable[RunTracker] = ()) -> None:
        self.trackers: list[RunTracker] = list(trackers)
        self.dropped: dict[str, str] = {}  # tracker class name -> why it was dropped

    def start(self, config: Mapping[str, Any]) -> None:
        self._each("start", lambda t: t.start(config))

    def log_episode(self, episode: EpisodeLike) -> None:
        self._each("log_episode", lambda t: t.log_episode(episode))

    def log_evaluation(self, evaluation: EvaluationLike) -> None:
        self._each("log_evaluation", lambda t: t.log_evaluation(evaluation))

    def log_progress(self, episode: EpisodeLike, evaluation: EvaluationLike | None) -> None:
        """The training callback's two arguments, as `train()` passes them."""
        self.log_episode(episode)
        if evaluation is not None:
            self.log_evaluation(evaluation)

    def finish(self, artifacts: RunArtifacts) -> None:
        self._each("finish", lambda t: t.finish(artifacts))

    def close(self, outcome: RunOutcome = "finished") -> None:
        self._each("close", lambda t: t.close(outcome))

    def _each(self, what: str, call: Callable[[RunTracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:  # the same rule as GuardedTracker: tracking never ends training
                name = type(tracker).__name__
                self.dropped[name] = f"{what} raised {one_line(exc)}"
                logger.warning("dropping tracker %s: %s raised %s", name, what, one_line(exc))
                self.trackers.remove(tracker)
