"""Reward histories as CSV and as a learning-curve PNG."""

from __future__ import annotations

import csv
import io

from app.schemas.jobs import RewardsOut

CSV_COLUMNS = (
    "episode",
    "episode_return",
    "avg_return_10",
    "env_steps",
    "wall_time",
    "eval_mean_return",
    "eval_std_return",
)


def rewards_csv(rewards: RewardsOut) -> str:
    """One row per episode; the evaluation run after an episode fills that row's eval_* columns."""
    evaluations = {e.episode: e for e in rewards.evaluations}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rewards.episodes:
        evaluation = evaluations.get(row.episode)
        writer.writerow(
            [
                row.episode,
                repr(row.episode_return),
                repr(row.avg_return_10),
                row.env_steps,
                f"{row.wall_time:.3f}",
                "" if evaluation is None else repr(evaluation.mean_return),
                "" if evaluation is None else repr(evaluation.std_return),
            ]
        )
    return buffer.getvalue()


def rewards_png(rewards: RewardsOut) -> bytes:
    """The learning curve: episode returns, their 10-episode average, and evaluations with their spread."""
    # Figure + the Agg canvas directly, never pyplot: no global figure state shared between request threads,
    # and no GUI backend selection in a server. Imported here because matplotlib is slow to import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    episodes = [row.episode for row in rewards.episodes]
    if episodes:
        axes.plot(episodes, [r.episode_return for r in rewards.episodes], color="0.7", lw=1, label="episode return")
        axes.plot(episodes, [r.avg_return_10 for r in rewards.episodes], color="C0", lw=2, label="average of last 10")
    if rewards.evaluations:
        axes.errorbar(
            [e.episode for e in rewards.evaluations],
            [e.mean_return for e in rewards.evaluations],
            yerr=[e.std_return for e in rewards.evaluations],
            fmt="o",
            color="C3",
            capsize=3,
            label="evaluation (mean ± std)",
        )
    if not episodes and not rewards.evaluations:
        axes.text(0.5, 0.5, "no episodes yet", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.legend(loc="lower right")
    axes.set_xlabel("episode")
    axes.set_ylabel("return")
    axes.set_title(f"job {rewards.job_id} ({rewards.status})")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
