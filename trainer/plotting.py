"""rewards.png for a training run: the learning curve (`models.learning_curve`) of its records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from models.learning_curve import DEFAULT_TITLE, learning_curve_png

if TYPE_CHECKING:
    from trainer.records import EpisodeRecord, EvaluationRecord


def plot_rewards(
    path: Path,
    episodes: Sequence[EpisodeRecord],
    evaluations: Sequence[EvaluationRecord],
    *,
    title: str = DEFAULT_TITLE,
) -> None:
    """Write rewards.png: per-episode return, the 10-episode average, evaluation mean +/- std."""
    png = learning_curve_png(
        [(r.episode, r.episode_return, r.avg_return_10) for r in episodes],
        [(r.episode, r.mean_return, r.std_return) for r in evaluations],
        title=title,
    )
    Path(path).write_bytes(png)
