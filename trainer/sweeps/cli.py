"""`python -m trainer sweeps`: the sweep runner's command line (the flags it shares with the worker are
trainer.settings')."""

from __future__ import annotations

import sys

from trainer.settings import (
    SweepRunnerSettings,
    claimer_parser,
    default_holder_id,
    parse_flags,
    positive_int,
    start_process,
)
from trainer.sweeps.runner import RunnerOptions, SweepRunner


def parse_args(argv: list[str] | None = None) -> tuple[RunnerOptions, SweepRunnerSettings]:
    """The runner's options and settings: flags, with defaults from the settings (DATABASE_URL, RAY_ADDRESS...)."""
    description = "Run queued hyperparameter sweeps on Ray Tune."
    settings, parser = claimer_parser(SweepRunnerSettings, "sweeps", description, holder="runner", row="sweep")
    parser.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local Ray (default: all)")
    settings, args, shared = parse_flags(settings, parser, argv)
    options = RunnerOptions(
        runner_id=args.runner_id or default_holder_id(),
        num_cpus=args.num_cpus,
        ray_idle_shutdown_seconds=settings.ray_idle_shutdown_seconds,
        **shared,
    )
    return options, settings


def main(argv: list[str] | None = None) -> int:
    options, settings = parse_args(argv)
    stop = start_process(settings, "stopping")
    return SweepRunner(options, stop=stop).run()


if __name__ == "__main__":
    sys.exit(main())
