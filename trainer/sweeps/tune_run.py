"""One sweep on Ray Tune: build the Tuner from the sweep's row, and fit (on the Ray trainer.sweeps.ray_connection
connected to).

Imported by the runner only when it has claimed a sweep, so an idle runner (the embedded one of `make run`) never
loads Ray, Tune or torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray import tune
from sqlalchemy.orm import Session

from models.sweep_space import Dimension, check_space
from models.training_config import config_from_job
from store.registry import get_model
from store.tables.work_queues import Sweep
from trainer.sweeps.trainable import TrialContext, run_trial
from trainer.sweeps.tune_hooks import StopWhenSet, TrialJobs
from trainer.sweeps.tune_space import make_scheduler, make_searcher, tune_space

if TYPE_CHECKING:
    from trainer.sweeps.runner import RunnerOptions

logger = logging.getLogger(__name__)
# The results live in the database, so Tune's own result files are off, and its end-of-run summary would warn
# once per trial that they are missing.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

SessionCall = Callable[[Callable[[Session], Any]], Any]
# What Tune sets in every trial process for PyTorch Lightning (see _no_lightning_variable_for_trials).
LIGHTNING_VARIABLE = "PL_DISABLE_FORK"


def configure_tune() -> None:
    """Tune's settings for every sweep of this process (Tune reads them when a run starts; an operator's win).

    Trials report the periodic evaluation and, last, the objective, which Tune's strict check would refuse (it wants
    every metric in every result); and the database holds the results, so Tune writes no result files of its own.
    """
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    _no_lightning_variable_for_trials()
    _no_callback_usage_tag_unless_reported()


def _no_lightning_variable_for_trials() -> None:
    """Trial processes start as plain Ray workers, without a runtime environment.

    Tune gives every trial actor a runtime environment of one variable of its own, PL_DISABLE_FORK=1 (for PyTorch
    Lightning, which trials do not use). Ray starts an actor that has any runtime environment through a setup
    process first (a Python that imports Ray, then execs the worker): measured, about 0.5 CPU s more per trial
    process on a 2-core machine. The variables Tune passes on from this process's environment (AWS credentials,
    Ray Train's settings) still reach the trials, through that setup process then.
    """
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # another Ray's layout: its trials keep the variable, and start as Ray starts them
        return
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        defaults.pop(LIGHTNING_VARIABLE, None)


def _no_callback_usage_tag_unless_reported() -> None:
    """With Ray's usage statistics off, Tune does not count a run's callbacks by kind for them.

    To tell its own callbacks from others, Tune imports every logger integration it has, MLflow's among them: about
    0.8 CPU s at a runner's first sweep (MLflow scans every installed package's entry points), in a process that
    never uses MLflow. The count only goes into the usage statistics' tags, which nobody reads while they are off
    (a local Ray turns them off; a cluster's drivers say so with RAY_USAGE_STATS_ENABLED=0).
    """
    try:
        from ray._common.usage import usage_lib
        from ray.air._internal import usage
    except ImportError:  # another Ray's layout: Tune counts them as it does
        return
    if not usage_lib.usage_stats_enabled():
        usage.tag_callbacks = _no_callback_usage_tag


def _no_callback_usage_tag(callbacks: object) -> bool:
    return False  # as Tune's own says when it records nothing


def run_tune(
    sweep: Sweep,
    options: RunnerOptions,
    session_call: SessionCall,
    *,
    cancelled: threading.Event,
    stop: threading.Event,
) -> None:
    """Run the sweep's trials on Tune until they end or an event is set (cancelled, or the runner stopping)."""
    configure_tune()
    base = dict(sweep.base)
    preset = str(base.pop("preset", "default"))
    model_id, env_id = session_call(lambda s: _model(s, sweep.model))
    if env_id is not None and config_from_job(sweep.base).env_id != env_id:
        base["env_id"] = env_id  # the model's environment, stored only where the preset's differs (as for jobs)
    space = {name: Dimension.model_validate(value) for name, value in sweep.space.items()}
    # `episodes` and `eval_every` may be searched too: ASHA's horizon is the longest run any trial can have.
    points = check_space(preset, base, space, search=sweep.search)
    max_episodes = max(point.config.episodes for point in points)
    eval_every = min(point.config.eval_every for point in points)
    context = TrialContext(
        database_url=options.database_url,
        sweep_id=sweep.id,
        preset=preset,
        base=base,
        lease_seconds=options.lease_seconds,
        model_id=model_id,
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": options.trial_cpus})
    grid = sweep.search == "grid"
    with tempfile.TemporaryDirectory(prefix=f"ddpg-sweep-{sweep.id}-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(space, grid=grid),
            tune_config=tune.TuneConfig(
                num_samples=1 if grid else sweep.trials,
                search_alg=make_searcher(sweep.search, seed=sweep.id, max_concurrent=sweep.max_concurrent),
                scheduler=make_scheduler(sweep.early_stop, max_episodes=max_episodes, eval_every=eval_every),
                # A finished trial's process (torch and the environment imported) takes the next trial: measured,
                # a new process per trial cost about 14 s each on this 2-core machine.
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"sweep-{sweep.id}",
                storage_path=storage,
                stop=StopWhenSet(cancelled, stop),
                callbacks=[TrialJobs(session_call, sweep.id, runner_id=options.runner_id, cancelled=cancelled)],
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                verbose=0,
            ),
        )
        tuner.fit()


def _model(session: Session, name: str) -> tuple[int | None, str | None]:
    """The sweep's model (id, environment), or (None, None) when it does not exist yet: the trials' policies then
    join the model of their environment, as a job's do."""
    model = get_model(session, name)
    return (None, None) if model is None else (model.id, model.env_id)
