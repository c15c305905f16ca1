"""The learning curve PNG: episode returns, their 10-episode average, and the evaluations marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

# Agg renders to files without a display; set before pyplot is imported so a headless worker never
# tries to open a window.
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from trainer.records import EpisodeRecord, EvaluationRecord


def plot_rewards(
    path: Path,
    episodes: Sequence[EpisodeRecord],
    evaluations: Sequence[EvaluationRecord],
    *,
    title: str = "DDPG learning curve",
) -> None:
    """Write rewards.png: per-episode return, the 10-episode average, evaluation mean +/- std."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        xs = [r.episode for r in episodes]
        ax.plot(xs, [r.episode_return for r in episodes], color="tab:blue", alpha=0.45, label="episode return")
        ax.plot(xs, [r.avg_return_10 for r in episodes], color="tab:blue", linewidth=2, label="10-episode average")
        if evaluations:
            ax.errorbar(
                [r.episode for r in evaluations],
                [r.mean_return for r in evaluations],
                yerr=[r.std_return for r in evaluations],
                fmt="o",
                color="tab:orange",
                capsize=3,
                label="evaluation (mean ± std, no noise)",
            )
        ax.set_title(title)
        ax.set_xlabel("episode")
        ax.set_ylabel("return")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
