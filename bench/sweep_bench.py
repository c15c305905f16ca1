"""Sweep benchmark: a 16-trial sweep of the default preset over seeds on Ray Tune, against the plain job worker.

    python bench/sweep_bench.py                 # 16 seeds: the plain worker, then sweeps at max_concurrent 1 and 2
    python bench/sweep_bench.py --seeds 4       # quicker
    python bench/sweep_bench.py --episodes 15 --concurrency 1 --no-plain   # the seed lottery of a shorter run

The sweep is a grid over `seed` (0..N-1), so every trial runs exactly the config the plain worker runs as a job:
the difference per trial is Ray's (actor start, reporting to Tune, the held-out evaluation of the objective). Both
run as users run them, as processes against one SQLite database: `python -m trainer worker` and `python -m
trainer sweeps` with a local Ray of 2 CPUs (its start-up is reported apart). Prints numbers only; nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import jobs, sweeps
from store.db import create_db_engine, make_session_factory, migrate
from store.tables.registry import Policy
from store.tables.work_queues import Job, Sweep, SweepTrial

ROOT = Path(__file__).resolve().parents[1]


def _wait(check: object, what: str, deadline: float = 3600.0) -> None:
    assert callable(check)
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def _seconds(job: Job) -> float:
    assert job.finished_at is not None and job.started_at is not None
    return (job.finished_at - job.started_at).total_seconds()


def plain_worker(
    sessions: sessionmaker[Session], url: str, seeds: int, base: dict[str, object], logs: Path
) -> tuple[float, list[float]]:
    """Wall seconds for `seeds` jobs run one after another by one worker, and each job's own wall seconds."""
    with sessions() as session:
        ids = [
            jobs.enqueue_job(session, config={**base, "seed": seed}, promote="never", max_queued=1000).id
            for seed in range(seeds)
        ]
    start = time.perf_counter()
    with (logs / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer", "worker", f"--max-jobs={seeds}", "--poll-interval=0.1"],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        process.wait()
    wall = time.perf_counter() - start
    with sessions() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        per_job = [
            (job.finished_at - job.started_at).total_seconds() for job in rows if job.finished_at and job.started_at
        ]
    return wall, per_job


def sweep(
    sessions: sessionmaker[Session], url: str, seeds: int, base: dict[str, object], *, concurrent: int, logs: Path
) -> dict[str, object]:
    with sessions() as session:
        sweep_id = sweeps.enqueue_sweep(
            session, model="pendulum", base=base,
            space={"seed": {"choice": list(range(seeds))}}, trials=seeds, max_concurrent=concurrent,
            search="grid", early_stop=None, promote="if_better", max_failures=1, max_queued=10,
        ).id  # fmt: skip
    start = time.perf_counter()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    with (logs / f"runner-{concurrent}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer", "sweeps", "--once", "--num-cpus=2", "--poll-interval=0.1"],
            cwd=ROOT, env={**env, "DATABASE_URL": url}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        process.wait()
    wall = time.perf_counter() - start
    with sessions() as session:
        row = session.get(Sweep, sweep_id)
        assert row is not None and row.started_at is not None and row.finished_at is not None
        trials = sweeps.trials_of(session, sweep_id)
        first_trial = min(job.started_at for _, job in trials if job.started_at)
        per_trial = [
            (job.finished_at - job.started_at).total_seconds()
            for _, job in trials
            if job.finished_at and job.started_at
        ]
        heldout = [trial.heldout_return for trial, _ in trials if trial.heldout_return is not None]
        best = session.get(SweepTrial, row.best_job_id) if row.best_job_id else None
        policy = session.get(Policy, row.policy_id) if row.policy_id else None
        return {
            "status": row.status,
            "wall": wall,
            "ray_start": (first_trial - row.started_at).total_seconds(),
            "trials_wall": (row.finished_at - first_trial).total_seconds(),
            "per_trial": per_trial,
            "heldout": heldout,
            "best_heldout": best.heldout_return if best else None,
            "best_seed": best.params.get("seed") if best else None,
            "promoted_eval": policy.eval_mean_return if policy else None,
            "trials": len(trials),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16, help="trials per sweep and jobs of the plain worker")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per run (default: the preset's, 30)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="max_concurrent of each sweep")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain worker")
    args = parser.parse_args()
    base: dict[str, object] = {"preset": "default"}
    if args.episodes is not None:
        base["episodes"] = args.episodes
    plain: tuple[float, list[float]] | None = None
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        migrate(url)
        sessions = make_session_factory(create_db_engine(url))
        logs = Path(tmp)
        if not args.no_plain:
            plain = plain_worker(sessions, url, args.seeds, base, logs)
        load = os.getloadavg()[0]
        results = {c: sweep(sessions, url, args.seeds, base, concurrent=c, logs=logs) for c in args.concurrency}
    print(f"config {base}, {args.seeds} seeds; load average before the sweeps: {load:.1f} on {os.cpu_count()} cores")
    print("| run | wall s (Ray start) | trials/min | per trial median s | wall per trial s | overhead vs worker |")
    print("|---|---:|---:|---:|---:|---:|")
    plain_per_job = None
    if plain is not None:
        plain_wall, plain_jobs = plain
        plain_per_job = plain_wall / args.seeds
        rate = 60 * args.seeds / plain_wall
        print(
            f"| plain worker | {plain_wall:.1f} | {rate:.1f} | {statistics.median(plain_jobs):.1f} "
            f"| {plain_per_job:.1f} | |"
        )
    for concurrent, r in results.items():
        trials_wall = float(str(r["trials_wall"]))
        per_trial = r["per_trial"]
        assert isinstance(per_trial, list)
        per = trials_wall / args.seeds
        # Per trial against per job, both one at a time: at max_concurrent 2 two trials share the two cores.
        shown = f"{(per / plain_per_job - 1) * 100:+.0f}%" if concurrent == 1 and plain_per_job else ""
        wall, ray_start = float(str(r["wall"])), float(str(r["ray_start"]))
        rate = 60 * args.seeds / trials_wall
        print(
            f"| sweep, max_concurrent {concurrent} | {wall:.1f} ({ray_start:.1f}) | {rate:.1f} "
            f"| {statistics.median(per_trial):.1f} | {per:.1f} | {shown} |"
        )
    heldout = results[args.concurrency[0]]["heldout"]
    assert isinstance(heldout, list)
    print(f"\nseed lottery over {len(heldout)} seeds (held-out mean return of each exported actor, 20 episodes):")
    print(
        f"  min {min(heldout):.1f}  median {statistics.median(heldout):.1f}  max {max(heldout):.1f}  "
        f"std {statistics.pstdev(heldout):.1f}  spread {max(heldout) - min(heldout):.1f}"
    )
    print(f"  sorted: {' '.join(f'{value:.0f}' for value in sorted(heldout))}")
    for concurrent, r in results.items():
        print(
            f"  max_concurrent {concurrent}: {r['status']}, best seed {r['best_seed']}, "
            f"held-out {r['best_heldout']:.1f}; the promoted policy's own evaluation {r['promoted_eval']:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
