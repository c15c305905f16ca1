"""A sweep's space as Ray Tune's, the held-out seeds of the objective, and Tune as the runner sets it up (no cluster
needed)."""

from __future__ import annotations

import random
import sys

import pytest

from models.sweep_space import Dimension
from models.training_config import make_config
from trainer.evaluation import EVAL_SEED_BASE

# Ray Tune (and the runner's modules, which import it) are imported by the tests that use them, not at collection:
# importing it cost every pytest runner about a CPU second, and only the one that runs this module needs it.


def _space(**dimensions: dict[str, object]) -> dict[str, Dimension]:
    return {name: Dimension.model_validate(value) for name, value in dimensions.items()}


def test_every_kind_samples_within_its_bounds_and_randint_includes_its_high_end() -> None:
    from trainer.sweeps.trainable import _plain
    from trainer.sweeps.tune_space import tune_space

    space = tune_space(
        _space(
            actor_lr={"loguniform": [1e-4, 3e-3]},
            tau={"uniform": [0.01, 0.05]},
            seed={"randint": [3, 4]},
            hidden_size={"choice": [64, 128]},
        ),
        grid=False,
    )
    random.seed(0)
    samples = [{name: _plain(domain.sample()) for name, domain in space.items()} for _ in range(200)]
    assert all(1e-4 <= s["actor_lr"] <= 3e-3 and 0.01 <= s["tau"] <= 0.05 for s in samples)
    assert {s["seed"] for s in samples} == {3, 4}
    assert {s["hidden_size"] for s in samples} == {64, 128}
    # What a trial builds from a sample is a valid config: Python types, accepted by the strict model.
    assert all(type(s["seed"]) is int and type(s["actor_lr"]) is float for s in samples)
    make_config("default", **samples[0])


def test_a_grid_is_every_choice() -> None:
    from ray.tune.search.sample import Domain

    from trainer.sweeps.tune_space import tune_space

    space = tune_space(_space(hidden_size={"choice": [32, 64]}), grid=True)
    assert space == {"hidden_size": {"grid_search": [32, 64]}}
    assert not isinstance(space["hidden_size"], Domain)


def test_held_out_seeds_are_neither_the_training_seed_nor_the_evaluation_seeds() -> None:
    from trainer.sweeps.trainable import HELDOUT_EPISODES, HELDOUT_SEED_BASE, heldout_seed_base

    default = make_config("default", seed=12)
    assert heldout_seed_base(default) == HELDOUT_SEED_BASE
    assert HELDOUT_SEED_BASE >= EVAL_SEED_BASE + 100  # evaluation seeds are EVAL_SEED_BASE + (0..eval_episodes-1)
    inside = make_config("default", seed=HELDOUT_SEED_BASE + 3)
    base = heldout_seed_base(inside)
    assert inside.seed not in range(base, base + HELDOUT_EPISODES)


def test_asha_stops_on_the_periodic_evaluation_and_never_on_the_final_report() -> None:
    from trainer.sweeps.tune_space import make_scheduler

    scheduler = make_scheduler("asha", max_episodes=30, eval_every=2)
    assert (scheduler.metric, getattr(scheduler, "_time_attr", None), getattr(scheduler, "_max_t", None)) == (
        "eval_return",
        "episode",
        31,
    )
    assert make_scheduler(None, max_episodes=30, eval_every=2).metric is None


def test_every_search_runs_at_most_max_concurrent_trials() -> None:
    from trainer.sweeps.tune_space import make_searcher

    # Tune would ignore TuneConfig.max_concurrent_trials for a variant generator passed in (a bench caught 2 trials
    # running at max_concurrent 1), so every search carries the limit itself.
    for search in ("tpe", "random", "grid"):
        searcher = make_searcher(search, seed=1, max_concurrent=3)
        assert getattr(searcher, "max_concurrent", None) == 3, search


def test_tunes_trial_actors_carry_no_runtime_environment_once_a_sweep_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any runtime environment makes Ray start a trial's process through a setup process first (0.5 CPU s more).
    from ray.tune.execution import class_cache

    from trainer.sweeps.tune_run import _no_lightning_variable_for_trials

    monkeypatch.setattr(class_cache, "DEFAULT_ENV_VARS", dict(class_cache.DEFAULT_ENV_VARS))  # put back after
    for name in class_cache.ENV_VARS_TO_PROPAGATE:  # what Tune passes on from the runner's environment, if set
        monkeypatch.delenv(name, raising=False)

    class Trainable:
        pass

    _no_lightning_variable_for_trials()
    assert class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"] == {}


def test_with_usage_statistics_off_a_run_does_not_import_mlflow_to_count_its_callbacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray import tune
    from ray.air._internal import usage

    from trainer.sweeps.tune_run import _no_callback_usage_tag_unless_reported

    monkeypatch.setattr(usage, "tag_callbacks", usage.tag_callbacks)  # put back after the test
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    _no_callback_usage_tag_unless_reported()
    assert usage.tag_callbacks.__module__ == usage.__name__  # reported: Tune counts them as it does

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _no_callback_usage_tag_unless_reported()
    monkeypatch.delitem(sys.modules, "ray.air.integrations.mlflow", raising=False)
    usage.tag_callbacks([tune.Callback()])
    assert "ray.air.integrations.mlflow" not in sys.modules
