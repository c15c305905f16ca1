"""What bench/serve_bench.py measured, as its Markdown tables: one row per scenario and worker count, then each
serving target with whether it was met. The scenarios' own modules (bench/rollout_bench.py, protocol_bench.py,
recording_bench.py) add their rows through `row`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Run
from bench.protocol_bench import ProtocolRuns, report_protocols
from bench.recording_bench import RecordingRuns, report_recording
from bench.rollout_bench import report_rollouts

# The serving targets this benchmark reports against.
TARGET_ACT_NOOP_RATIO = 0.90
TARGET_ACT_FLOOR_RATIO = 0.75  # /act's requests/s against the bare ASGI app's on the same uvicorn
TARGET_ACT_FLOOR_P99_FACTOR = 1.5
TARGET_P99_MS = 5.0
TARGET_OBS_PER_SECOND = 300_000
TARGET_TRAINING_P99_FACTOR = 3.0


@dataclass
class WorkerResults:
    """Everything measured against one server (one worker count)."""

    idle: dict[str, Run]
    promotions: Promotions | None = None
    training: Run | None = None
    training_job: dict[str, object] = field(default_factory=dict)
    # (plain /act, /act under a shadow rollout, its record) and (HTTP keep-alive loop, stream loop).
    shadow: tuple[Run, Run, dict[str, object]] | None = None
    loops: tuple[Run, Run] | None = None
    # HTTP V2 and gRPC inference, and the stream's JSON and msgpack frames (bench/protocol_bench.py).
    protocols: ProtocolRuns | None = None
    # Closed loops with recording off / on / on with exploration, and recording at full speed.
    recording: RecordingRuns | None = None


@dataclass
class Promotions:
    """The promotion scenario: the checking generator without promotions and during them, and what it found."""

    idle: Run  # the same Python generator, no promotions
    during: Run
    promoted: int
    answers_per_policy: dict[int, int]
    problems: list[str]


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def row(workers: int, name: str, run: Run, versus: str = "") -> None:
    cpu = run.extra.get("cpu_us")
    print(
        f"| {workers} | {name} | {run.observations_per_request} | {fmt_rate(run.rps)} | "
        f"{fmt_rate(run.obs_per_second)} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | "
        f"{f'{cpu:.1f}' if isinstance(cpu, float) else ''} | {run.errors} | {versus} |"
    )


def report(
    args: argparse.Namespace,
    results: dict[int, WorkerResults],
    *,
    use_wrk: bool,
    load: tuple[float, float],
    elapsed: float,
) -> None:
    generator = "wrk (1 thread)" if use_wrk else "asyncio HTTP/1.1 generator"
    if use_wrk and args.wrk_threads != 1:
        generator = f"wrk ({args.wrk_threads} threads)"
    print(f"Machine: {machine()}")
    shape = " (PPO-like: tanh, clip, normalized)" if args.ppo_like else ""
    print(
        f"Load: {generator} on the same machine, {args.connections} keep-alive connections, "
        f"{args.duration:g} s per measurement, median of {args.rounds} interleaved rounds; actor hidden size "
        f"{args.hidden_size}{shape}. Load average before {load[0]:.2f}, after {load[1]:.2f}; "
        f"bench took {elapsed:.0f} s."
    )
    print()
    print("| Workers | Scenario | Obs/request | Requests/s | Obs/s | p50 ms | p99 ms | CPU us/req | Failed | vs |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    checks: list[tuple[str, bool, str]] = []
    for workers, entry in results.items():
        idle = entry.idle
        floor, noop, act1 = idle["floor"], idle["noop"], idle["act1"]
        floor_share, floor_p99 = act1.rps / floor.rps, act1.p99_ms / floor.p99_ms
        shares = act1.extra.get("floor_shares", [])
        spread = (
            f" (round by round {min(shares):.0%}-{max(shares):.0%}, median {statistics.median(shares):.0%})"
            if isinstance(shares, list) and shares
            else ""
        )

        row(workers, "bare ASGI app, same uvicorn (the floor)", floor)
        row(workers, "POST /bench/noop", noop, f"{noop.rps / floor.rps:.0%} of floor req/s")
        floor_cpu, act_cpu = floor.extra.get("cpu_us"), act1.extra.get("cpu_us")
        cpu_share = (
            f", CPU/req {act_cpu / floor_cpu:.2f}x floor's"
            if isinstance(floor_cpu, float) and isinstance(act_cpu, float)
            else ""
        )
        row(
            workers,
            "POST /act",
            act1,
            f"{floor_share:.0%} of floor req/s{spread}, p99 {floor_p99:.2f}x floor's{cpu_share}; "
            f"{act1.rps / noop.rps:.0%} of noop",
        )
        for name in ("act64", "act1024"):
            run = idle[name]
            row(workers, "POST /act", run, f"{run.obs_per_second / act1.obs_per_second:.0f}x the obs/s of 1")
        if workers == 1:
            checks.append(
                (
                    f"/act >= {TARGET_ACT_FLOOR_RATIO:.0%} of the floor's req/s (1 worker)",
                    floor_share >= TARGET_ACT_FLOOR_RATIO,
                    f"{floor_share:.0%}{spread}",
                )
            )
            checks.append(
                (
                    f"/act p99 <= {TARGET_ACT_FLOOR_P99_FACTOR:g}x the floor's (1 worker)",
                    floor_p99 <= TARGET_ACT_FLOOR_P99_FACTOR,
                    f"{floor_p99:.2f}x ({act1.p99_ms:.2f} ms against {floor.p99_ms:.2f} ms)",
                )
            )
            checks.append(
                (
                    f"/act >= {TARGET_ACT_NOOP_RATIO:.0%} of noop req/s (1 worker)",
                    act1.rps >= TARGET_ACT_NOOP_RATIO * noop.rps,
                    f"{act1.rps / noop.rps:.0%}",
                )
            )
            checks.append(
                (f"/act p99 <= {TARGET_P99_MS:g} ms (1 worker)", act1.p99_ms <= TARGET_P99_MS, f"{act1.p99_ms:.2f} ms")
            )
            checks.append(
                (
                    f">= {TARGET_OBS_PER_SECOND:,} obs/s at 1024 per request (1 worker)",
                    idle["act1024"].obs_per_second >= TARGET_OBS_PER_SECOND,
                    f"{fmt_rate(idle['act1024'].obs_per_second)} obs/s",
                )
            )
        training, job = entry.training, entry.training_job
        if training is not None:
            factor = training.p99_ms / act1.p99_ms
            row(workers, "POST /act while a job trains", training, f"p99 {factor:.1f}x idle")
            ok = factor <= TARGET_TRAINING_P99_FACTOR and training.errors == 0
            checks.append(
                (
                    f"training: p99 <= {TARGET_TRAINING_P99_FACTOR:g}x idle, no failures",
                    ok,
                    f"{factor:.1f}x, {training.errors} failed, job {job['status']} after "
                    f"{job['episodes_done']} episodes",
                )
            )
        report_rollouts(workers, entry.shadow, entry.loops, row, checks)
        report_protocols(workers, entry.protocols, row)
        report_recording(workers, entry.recording, row, checks)
        promotions = entry.promotions
        if promotions is None:
            continue
        during = promotions.during
        row(workers, "POST /act, Python generator (checks every answer)", promotions.idle)
        row(
            workers,
            f"POST /act during {promotions.promoted} promotions (same generator)",
            during,
            f"p99 {during.p99_ms / promotions.idle.p99_ms:.1f}x; answers per policy {promotions.answers_per_policy}",
        )
        wrong = [p for p in promotions.problems if p.startswith("wrong")]
        ok = (
            during.errors == 0
            and not promotions.problems
            and promotions.promoted == args.promotions
            and len(promotions.answers_per_policy) == 2
        )
        measured = (
            f"{promotions.promoted} promoted, {during.errors} failed, {len(wrong)} wrong answers of "
            f"{sum(promotions.answers_per_policy.values())}"
        )
        if promotions.problems:
            measured += f"; first problem: {promotions.problems[0]}"
        checks.append(
            (f"promotions ({workers} worker(s)): no failures, each answer from the policy it names", ok, measured)
        )
    print()
    print("| Target | Met | Measured |")
    print("|---|---|---|")
    for name, ok, measured in checks:
        print(f"| {name} | {'yes' if ok else 'NO'} | {measured} |")
