"""A sweep's space, search and early stopping as Ray Tune objects.

Optuna's TPE runs through Tune's OptunaSearch; ASHA stops trials on their periodic evaluations (`eval_return` at
`episode`), while the searcher learns from the objective every finished trial reports last: `heldout_return`,
the exported actor's return on seeds neither training nor its evaluations used.
"""

from __future__ import annotations

from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from models.sweep_space import Dimension
from trainer.sweeps.reports import OBJECTIVE, PROGRESS, TIME_ATTR


def tune_space(space: dict[str, Dimension], *, grid: bool) -> dict[str, Any]:
    """Tune's param_space. randint's high is inclusive here and exclusive in Tune, hence the +1."""
    result: dict[str, Any] = {}
    for name, dimension in space.items():
        kind = dimension.kind
        if kind == "choice":
            options = list(dimension.choice or [])
            result[name] = tune.grid_search(options) if grid else tune.choice(options)
        elif kind == "loguniform":
            low, high = dimension.loguniform or (0.0, 0.0)
            result[name] = tune.loguniform(low, high)
        elif kind == "uniform":
            low, high = dimension.uniform or (0.0, 0.0)
            result[name] = tune.uniform(low, high)
        else:
            low_int, high_int = dimension.randint or (0, 0)
            result[name] = tune.randint(low_int, high_int + 1)
    return result


class _FinalObjectiveOptunaSearch(OptunaSearch):  # type: ignore[misc]
    """OptunaSearch told only the final objective: intermediate results carry the periodic evaluation instead
    (for ASHA), and Optuna's own pruning is not used, so they are not passed on."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return None


def make_searcher(search: str, *, seed: int, max_concurrent: int) -> Searcher | BasicVariantGenerator:
    """`tpe`: Optuna's TPE (seeded); `random` and `grid`: Tune's variant generator (grid: every combination).

    Each carries the concurrency limit itself: Tune's TuneConfig.max_concurrent_trials is ignored for a variant
    generator passed in (a bench caught two trials at once at max_concurrent 1).
    """
    if search == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
        searcher = _FinalObjectiveOptunaSearch(metric=OBJECTIVE, mode="max", sampler=sampler)
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def make_scheduler(early_stop: str | None, *, max_episodes: int, eval_every: int) -> TrialScheduler:
    """ASHA on the periodic evaluations, or run every trial to the end."""
    if early_stop != "asha":
        return FIFOScheduler()  # type: ignore[no-untyped-call]
    # The first rung after two evaluations: one evaluation of an untrained actor says little. max_t lies past the
    # last episode so the final (objective) report is never the one that stops a trial.
    grace = max(1, 2 * eval_every if eval_every > 0 else max_episodes // 4)
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        metric=PROGRESS,
        mode="max",
        max_t=max_episodes + 1,
        grace_period=min(grace, max_episodes),
        reduction_factor=2,
    )
