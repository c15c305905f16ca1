"""A training run as TensorBoard scalars: `tensorboard --logdir DIR` charts it, live while it trains.

Scalars, each with step = cumulative env steps (the x axis MLflow uses too): `episode/return`,
`episode/avg_return_10`, `evaluation/mean_return`, `evaluation/std_return`; the config as text.

Written with tensorboardX (the `tensorboard` extra, 0.7 MB): a writer of the event-file format that needs neither
TensorFlow nor the TensorBoard server. torch.utils.tensorboard would need the `tensorboard` package itself (the
viewer: ~50 MB with grpcio) in every training environment. Viewing needs `tensorboard` anywhere.

tensorboardX writes events from a background thread and flushes the file every `flush_secs`; its `flush()` does
not wait for events still queued. So a live view lags by up to `flush_secs`, and `close()` is what guarantees
every event is on disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.tracking.artifacts import RunArtifacts
from trainer.tracking.base import (
    EPISODE_AVG_RETURN_10,
    EPISODE_RETURN,
    EVAL_MEAN_RETURN,
    EVAL_STD_RETURN,
    EpisodeLike,
    EvaluationLike,
    GuardedTracker,
    RunOutcome,
)

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

logger = logging.getLogger(__name__)

CONFIG_TAG = "config"
OUTCOME_TAG = "outcome"
INSTALL_HINT = "pip install 'ddpg-policy-service[tensorboard]'"


class TensorBoardTracker(GuardedTracker):
    """Event files for one run in `log_dir`. Give each run its own directory (e.g. `DIR/<run name>`):
    TensorBoard draws every subdirectory of `--logdir` as one run, side by side."""

    def __init__(self, log_dir: Path, *, flush_secs: int = 5) -> None:
        """Create `log_dir` and open the event file. OSError (bad path) and ImportError (no tensorboardX) are
        raised here, not later, so a CLI can refuse `--tensorboard DIR` before training starts.

        `flush_secs`: how stale a live TensorBoard view may be (the writer thread flushes this often).
        """
        super().__init__()
        try:
            from tensorboardX import SummaryWriter
        except ImportError as exc:
            raise ImportError(f"tensorboardX is not installed ({INSTALL_HINT})") from exc

        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._writer: SummaryWriter | None = SummaryWriter(logdir=str(log_dir), flush_secs=flush_secs)

    def start(self, config: Mapping[str, Any]) -> None:
        """The config as a JSON code block (TensorBoard's text tab renders markdown)."""
        text = "```json\n" + json.dumps(dict(config), indent=2, sort_keys=True, default=str) + "\n```"
        self._write("writing the config", lambda w: w.add_text(CONFIG_TAG, text, 0))

    def log_episode(self, episode: EpisodeLike) -> None:
        def write(w: SummaryWriter) -> None:
            w.add_scalar(EPISODE_RETURN, float(episode.episode_return), int(episode.env_steps))
            w.add_scalar(EPISODE_AVG_RETURN_10, float(episode.avg_return_10), int(episode.env_steps))

        self._write(f"writing episode {episode.episode}", write)

    def log_evaluation(self, evaluation: EvaluationLike) -> None:
        def write(w: SummaryWriter) -> None:
            w.add_scalar(EVAL_MEAN_RETURN, float(evaluation.mean_return), int(evaluation.env_steps))
            w.add_scalar(EVAL_STD_RETURN, float(evaluation.std_return), int(evaluation.env_steps))

        self._write(f"writing the evaluation after episode {evaluation.episode}", write)

    def finish(self, artifacts: RunArtifacts) -> None:
        """Nothing to add: the files belong in the run's output directory or MLflow, not in event files."""

    def close(self, outcome: RunOutcome = "finished") -> None:
        """Record how the run ended and close the event file; safe to call more than once."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if self.enabled:
            self.guarded("writing the outcome", lambda: writer.add_text(OUTCOME_TAG, outcome, 0))
        try:
            writer.close()
        except Exception as exc:  # a full disk at the very end: the run itself is unaffected
            self.disable(f"closing the event file failed: {exc}")

    def _write(self, what: str, write: Callable[[SummaryWriter], None]) -> None:
        writer = self._writer
        if writer is not None:
            self.guarded(what, lambda: write(writer))
