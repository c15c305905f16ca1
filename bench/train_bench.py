"""Training benchmark: how fast each preset reaches an evaluation mean of -200, and where it ends.

    python bench/train_bench.py                       # default preset seeds 0-4, seed preset seeds 0-4
    python bench/train_bench.py --seed-preset-seeds 1 # the seed preset is slow (~80 s a run): fewer seeds

Each run is one process, one torch thread, run one after another. Wall times are those train() reports
(from its start, evaluation included, interpreter and import time excluded); `cpu@-200` is the process
CPU time to the same point: on a busy machine it excludes time spent waiting for a core, though
contention still inflates it (shared caches, VM steal), so quote wall times from an idle machine.
A run is not stopped at -200: it trains its preset's full episode budget, so the final and exported
numbers are real.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

from models.training_config import make_config
from trainer.records import EpisodeRecord, EvaluationRecord
from trainer.training import train

THRESHOLD = -200.0
# The training targets for the default preset.
TARGET_STEPS = 6_000
TARGET_MEDIAN_SECONDS = 5.0
TARGET_EXPORTED_MEAN = -170.0


@dataclass
class RunResult:
    preset: str
    seed: int
    steps_to_threshold: int | None
    seconds_to_threshold: float | None
    cpu_seconds_to_threshold: float | None
    final_eval: float
    exported_eval: float
    first_returns: list[float]
    last10_avg: float
    total_steps: int
    total_seconds: float


def run(preset: str, seed: int, overrides: dict[str, object]) -> RunResult:
    config = make_config(preset, seed=seed, **overrides)
    hit: list[EvaluationRecord] = []
    cpu_at_hit: list[float] = []
    cpu_start = time.process_time()

    def callback(_episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> bool:
        if evaluation is not None and evaluation.mean_return >= THRESHOLD and not hit:
            hit.append(evaluation)
            cpu_at_hit.append(time.process_time() - cpu_start)
        return True

    result = train(config, callback)
    last = result.episodes[-1]
    return RunResult(
        preset=preset,
        seed=seed,
        steps_to_threshold=hit[0].env_steps if hit else None,
        seconds_to_threshold=hit[0].wall_time if hit else None,
        cpu_seconds_to_threshold=cpu_at_hit[0] if cpu_at_hit else None,
        final_eval=result.evaluations[-1].mean_return,
        exported_eval=result.eval_mean_return if result.eval_mean_return is not None else float("nan"),
        first_returns=[r.episode_return for r in result.episodes[:3]],
        last10_avg=last.avg_return_10,
        total_steps=last.env_steps,
        total_seconds=last.wall_time,
    )


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[RunResult]) -> None:
    header = (
        f"{'preset':<8} {'seed':>4} {'steps@-200':>10} {'sec@-200':>8} {'cpu@-200':>8} {'final eval':>10} "
        f"{'exported':>9} {'last10 avg':>10} {'first 3 episode returns':>26} {'steps':>6} {'sec':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        first = " ".join(f"{x:.0f}" for x in r.first_returns)
        print(
            f"{r.preset:<8} {r.seed:>4} {_fmt(r.steps_to_threshold, 'd'):>10} {_fmt(r.seconds_to_threshold, '.1f'):>8} "
            f"{_fmt(r.cpu_seconds_to_threshold, '.1f'):>8} "
            f"{r.final_eval:>10.1f} {r.exported_eval:>9.1f} {r.last10_avg:>10.1f} {first:>26} "
            f"{r.total_steps:>6d} {r.total_seconds:>6.1f}"
        )
    presets = list(dict.fromkeys(r.preset for r in results))
    for preset in presets:
        rows = [r for r in results if r.preset == preset]
        hits = [r for r in rows if r.steps_to_threshold is not None]
        mean_exported = statistics.mean(r.exported_eval for r in rows)
        steps = statistics.median(r.steps_to_threshold for r in hits if r.steps_to_threshold) if hits else None
        secs = statistics.median(r.seconds_to_threshold for r in hits if r.seconds_to_threshold) if hits else None
        cpu = (
            statistics.median(r.cpu_seconds_to_threshold for r in hits if r.cpu_seconds_to_threshold) if hits else None
        )
        print(
            f"{preset:<8} {'med':>4} {_fmt(steps, '.0f'):>10} {_fmt(secs, '.1f'):>8} {_fmt(cpu, '.1f'):>8} "
            f"{statistics.median(r.final_eval for r in rows):>10.1f} "
            f"{statistics.median(r.exported_eval for r in rows):>9.1f} "
            f"{statistics.median(r.last10_avg for r in rows):>10.1f}   "
            f"({len(hits)}/{len(rows)} reached {THRESHOLD:.0f}; mean exported {mean_exported:.1f})"
        )


def check_default_targets(results: list[RunResult]) -> list[str]:
    rows = [r for r in results if r.preset == "default"]
    if not rows:
        return []
    in_budget = [r for r in rows if r.steps_to_threshold is not None and r.steps_to_threshold <= TARGET_STEPS]
    seconds = [r.seconds_to_threshold for r in rows if r.seconds_to_threshold is not None]
    exported = statistics.mean(r.exported_eval for r in rows)
    median_seconds = statistics.median(seconds) if seconds else float("inf")
    cpu = [r.cpu_seconds_to_threshold for r in rows if r.cpu_seconds_to_threshold is not None]
    median_cpu = statistics.median(cpu) if cpu else float("inf")
    return [
        f"{'PASS' if len(in_budget) == len(rows) else 'FAIL'}: {len(in_budget)}/{len(rows)} default seeds reach "
        f"{THRESHOLD:.0f} within {TARGET_STEPS} env steps",
        f"{'PASS' if median_seconds <= TARGET_MEDIAN_SECONDS else 'FAIL'}: median wall time to {THRESHOLD:.0f} "
        f"{median_seconds:.1f} s (target <= {TARGET_MEDIAN_SECONDS:.0f} s; median CPU time {median_cpu:.1f} s)",
        f"{'PASS' if exported >= TARGET_EXPORTED_MEAN else 'FAIL'}: mean exported evaluation {exported:.1f} "
        f"(target >= {TARGET_EXPORTED_MEAN:.0f})",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="default-preset seeds 0..N-1 (default 5)")
    parser.add_argument("--seed-preset-seeds", type=int, default=5, help="seed-preset seeds 0..N-1 (0 skips it)")
    parser.add_argument("--episodes", type=int, default=None, help="override every run's episode count")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {} if args.episodes is None else {"episodes": args.episodes}

    results: list[RunResult] = []
    started = time.perf_counter()
    plan = [("default", s) for s in range(args.seeds)] + [("seed", s) for s in range(args.seed_preset_seeds)]
    for preset, seed in plan:
        result = run(preset, seed, overrides)
        results.append(result)
        print(
            f"# {preset} seed {seed}: steps@-200 {_fmt(result.steps_to_threshold, 'd')} "
            f"sec@-200 {_fmt(result.seconds_to_threshold, '.1f')} exported {result.exported_eval:.1f} "
            f"({result.total_seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    print()
    print_table(results)
    print()
    for line in check_default_targets(results):
        print(line)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
