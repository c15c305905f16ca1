"""The learning curve as a PNG: episode returns, their 10-episode average, and the evaluations with their spread.

One drawing for every place that shows it (the trainer CLI's rewards.png, the worker's stored artifacts and
GET /jobs/{id}/rewards.png), from plain numbers, so it needs neither torch nor the service's schemas.

Drawn on a `Figure` with the Agg canvas directly, never through pyplot: no global figure state shared between
the API's request threads, and no GUI backend selection in a server or a headless worker. matplotlib is
imported inside the function because it is slow to import and most processes that import this never plot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

# (episode, return, average of the last 10 returns)
EpisodePoint = tuple[int, float, float]
# (episode after which it ran, mean return, std of the returns)
EvaluationPoint = tuple[int, float, float]

DEFAULT_TITLE = "DDPG learning curve"
FIGURE_SIZE_INCHES = (8.0, 4.5)
DPI = 100


def learning_curve_png(
    episodes: Sequence[EpisodePoint],
    evaluations: Sequence[EvaluationPoint] = (),
    *,
    title: str = DEFAULT_TITLE,
) -> bytes:
    """The PNG bytes of the curve; with no data at all, an image that says so (never an error)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if episodes:
        xs = [point[0] for point in episodes]
        axes.plot(xs, [point[1] for point in episodes], color="tab:blue", alpha=0.45, lw=1, label="episode return")
        axes.plot(xs, [point[2] for point in episodes], color="tab:blue", lw=2, label="10-episode average")
    if evaluations:
        axes.errorbar(
            [point[0] for point in evaluations],
            [point[1] for point in evaluations],
            yerr=[point[2] for point in evaluations],
            fmt="o",
            color="tab:orange",
            capsize=3,
            label="evaluation (mean ± std, no noise)",
        )
    if not episodes and not evaluations:
        axes.text(0.5, 0.5, "no episodes yet", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.legend(loc="lower right")
    axes.set_title(title)
    axes.set_xlabel("episode")
    axes.set_ylabel("return")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
