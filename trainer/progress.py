"""Training progress for humans: a tqdm bar on a terminal, one plain log line per episode otherwise."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm import tqdm

from trainer.records import EpisodeRecord, EvaluationRecord

logger = logging.getLogger("trainer.progress")


class ProgressSink(Protocol):
    def __call__(self, episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> None: ...


@contextmanager
def make_progress(total_episodes: int, *, interactive: bool) -> Iterator[ProgressSink]:
    """Yield a sink to call after every episode; close the bar (if any) on exit."""
    if not interactive:
        yield _log_line
        return
    bar = tqdm(total=total_episodes, unit="ep", dynamic_ncols=True)
    best: list[float] = []

    def update(episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> None:
        if evaluation is not None:
            best[:] = [max([evaluation.mean_return, *best])]
        postfix = {"return": f"{episode.episode_return:.0f}", "avg10": f"{episode.avg_return_10:.0f}"}
        if best:
            postfix["best_eval"] = f"{best[0]:.0f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    try:
        yield update
    finally:
        bar.close()


def _log_line(episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> None:
    logger.info(
        "episode %d return %.1f avg10 %.1f steps %d time %.1fs",
        episode.episode,
        episode.episode_return,
        episode.avg_return_10,
        episode.env_steps,
        episode.wall_time,
    )
    if evaluation is not None:
        logger.info(
            "evaluation after episode %d: mean %.1f std %.1f",
            evaluation.episode,
            evaluation.mean_return,
            evaluation.std_return,
        )
