"""Reward histories as CSV and as a learning-curve PNG."""

from __future__ import annotations

import csv
import io

from app.schemas.jobs import RewardsOut
from models.learning_curve import learning_curve_png

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
    return learning_curve_png(
        [(row.episode, row.episode_return, row.avg_return_10) for row in rewards.episodes],
        [(row.episode, row.mean_return, row.std_return) for row in rewards.evaluations],
        title=f"job {rewards.job_id} ({rewards.status})",
    )
