"""The serving benchmark's rows for recording live sessions (app.serving.experience), and, run as a script, the CPU
one session step of the routed /act path costs in one process with recording off and on.

    python bench/recording_bench.py            # in-process: CPU microseconds per session step, off / on / explore
    python bench/recording_bench.py --served   # the served rows below alone, against `python -m app`

- Closed loop with recording off, on, and on with exploration (Gaussian noise on 50% of sessions): the same
  closed loops as bench/rollout_bench.py (one client, each step sent when the previous answer arrived, with
  `session`, `reward` and `done`), over HTTP keep-alive and over `WS /act/stream`, interleaved `rounds` times.
  Steps per second with recording on against off (target: at least 90%), and the server's CPU time per step
  (the user + system time of uvicorn's processes over the runs, the flushes included; not the embedded trainer's
  processes, whose polling costs time, not steps): on a shared machine the wall-clock rate moves with the
  neighbours' load, the CPU a step costs does not.
- Recording at full speed: `connections` keep-alive connections send session steps (64 sessions that never end,
  each request completing the previous step's transition) as fast as the process answers; the row reports the
  transitions per second the process recorded (its experience_recorded_transitions counter over the run) and how
  many it dropped (target: none).
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/recording_bench.py` from the repository root
    sys.path.insert(0, str(REPO))

from bench.load import Run, median_run, python_load  # noqa: E402
from bench.rollout_bench import _http_loop, _stream_loop  # noqa: E402
from bench.service import http, server_cpu_seconds  # noqa: E402

TARGET_RECORDING_RATIO = 0.90
FULL_SPEED_SESSIONS = 64
MODEL = "pendulum"
# POLICY_REFRESH_SECONDS is 0.5 in the benchmark's service: every worker process follows a setting within a poll.
SETTLE_SECONDS = 1.5
EXPLORE = {"noise": "gaussian", "sigma": 0.1, "percent": 50}


@dataclass
class RecordingRuns:
    """Closed loops (HTTP, stream) per setting, and the full-speed recording run with its counts."""

    loops: dict[str, tuple[Run, Run]]
    # Server CPU microseconds per closed-loop step, per setting (HTTP and stream runs together), and per round.
    cpu_per_step: dict[str, float]
    cpu_rounds: dict[str, list[float]]
    full_speed: Run
    # Over every full-speed round: transitions the process recorded and dropped, and the seconds of load.
    recorded: int
    dropped: int
    full_speed_seconds: float


def set_recording(base_url: str, record: bool, explore: dict[str, object] | None = None) -> None:
    body: dict[str, object] = {"record": record, "max_transitions": 10_000_000, "explore": explore}
    status, answer = http("PUT", f"{base_url}/models/{MODEL}/experience", body)
    if status != 200:
        raise RuntimeError(f"PUT experience answered {status}: {answer}")
    time.sleep(SETTLE_SECONDS)


def _median_by_rate(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]


def _counter(base_url: str, name: str) -> float:
    """The sum of a counter's samples in /metrics (every label, every worker process)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure_recording(base_url: str, seconds: float, rounds: int, connections: int) -> RecordingRuns:
    """Closed loops under each setting (interleaved), then the full-speed run; recording is off at the end."""
    settings: dict[str, tuple[bool, dict[str, object] | None]] = {
        "off": (False, None),
        "on": (True, None),
        "explore": (True, EXPLORE),
    }
    runs: dict[str, tuple[list[Run], list[Run]]] = {name: ([], []) for name in settings}
    cpu = dict.fromkeys(settings, 0.0)
    steps = dict.fromkeys(settings, 0)
    cpu_rounds: dict[str, list[float]] = {name: [] for name in settings}
    asyncio.run(_http_loop(base_url, 0.5))  # warm-up
    for _ in range(rounds):
        for name, (record, explore) in settings.items():
            set_recording(base_url, record, explore)
            before = server_cpu_seconds(base_url)
            runs[name][0].append(asyncio.run(_http_loop(base_url, seconds)))
            runs[name][1].append(asyncio.run(_stream_loop(base_url, seconds)))
            time.sleep(SETTLE_SECONDS)  # the flush of what the runs recorded counts with them
            used = server_cpu_seconds(base_url) - before
            done = runs[name][0][-1].requests + runs[name][1][-1].requests
            cpu[name] += used
            steps[name] += done
            cpu_rounds[name].append(used / max(done, 1) * 1e6)
    loops = {name: (_median_by_rate(h), _median_by_rate(s)) for name, (h, s) in runs.items()}
    cpu_per_step = {name: cpu[name] / max(steps[name], 1) * 1e6 for name in settings}

    set_recording(base_url, True, None)
    bodies = [
        orjson.dumps({"observation": [0.9, 0.1, -0.4], "session": f"full-{i}", "reward": -1.0})
        for i in range(FULL_SPEED_SESSIONS)
    ]
    recorded_before = _counter(base_url, "experience_recorded_transitions_total")
    dropped_before = _counter(base_url, "experience_dropped_transitions_total")
    full_runs = []
    for _ in range(rounds):
        run, _ = asyncio.run(python_load(base_url, "/act", bodies, connections=connections, seconds=seconds))
        full_runs.append(run)
    time.sleep(2.5)  # the metrics snapshot and the last flush
    recorded = int(_counter(base_url, "experience_recorded_transitions_total") - recorded_before)
    dropped = int(_counter(base_url, "experience_dropped_transitions_total") - dropped_before)
    full = median_run(full_runs)
    set_recording(base_url, False, None)
    http("DELETE", f"{base_url}/models/{MODEL}/experience")
    full_seconds = sum(r.seconds for r in full_runs)
    return RecordingRuns(loops, cpu_per_step, cpu_rounds, full, recorded, dropped, full_seconds)


Row = Callable[..., None]  # serve_report.row(workers, name, run, versus="")
Checks = list[tuple[str, bool, str]]


def report_recording(workers: int, runs: RecordingRuns | None, row: Row, checks: Checks) -> None:
    if runs is None:
        return
    off_http, off_stream = runs.loops["off"]
    off_cpu = runs.cpu_per_step["off"]
    for name, label in (("off", "recording off"), ("on", "recording on"), ("explore", "recording + explore 50%")):
        over_http, over_stream = runs.loops[name]
        cpu = f"server CPU {runs.cpu_per_step[name]:.0f} us/step"
        if name != "off":
            cpu += f" ({off_cpu / runs.cpu_per_step[name]:.0%} of off's steps per CPU second)"
        vs_http = f"{over_http.rps / off_http.rps:.0%} of off's steps/s; {cpu}"
        vs_stream = f"{over_stream.rps / off_stream.rps:.0%} of off's steps/s"
        row(workers, f"closed loop, POST /act keep-alive, {label}", over_http, cpu if name == "off" else vs_http)
        row(workers, f"closed loop, WS /act/stream, {label}", over_stream, "" if name == "off" else vs_stream)
    rate = runs.recorded / runs.full_speed_seconds
    row(
        workers,
        f"session steps at full speed, recording ({FULL_SPEED_SESSIONS} sessions)",
        runs.full_speed,
        f"{rate:,.0f} transitions/s recorded; {runs.recorded:,} recorded, {runs.dropped} dropped",
    )
    on_http, on_stream = runs.loops["on"]
    for transport, on, off in (("HTTP", on_http, off_http), ("stream", on_stream, off_stream)):
        ratio = on.rps / off.rps
        checks.append(
            (
                f"recording on >= {TARGET_RECORDING_RATIO:.0%} of off's closed-loop steps/s, {transport} "
                f"({workers} worker(s))",
                ratio >= TARGET_RECORDING_RATIO,
                f"{ratio:.0%}",
            )
        )
    cpu_ratio = off_cpu / runs.cpu_per_step["on"]
    checks.append(
        (
            f"recording on >= {TARGET_RECORDING_RATIO:.0%} of off's closed-loop steps per server CPU second "
            f"({workers} worker(s))",
            cpu_ratio >= TARGET_RECORDING_RATIO,
            f"{cpu_ratio:.0%}",
        )
    )
    checks.append((f"full-speed recording drops nothing ({workers} worker(s))", runs.dropped == 0, str(runs.dropped)))


def in_process_cpu_per_step(steps: int = 20_000, rounds: int = 3) -> dict[str, list[float]]:
    """CPU microseconds (this process's, so a busy machine moves it little) per session step of the routed /act
    path (parse + route + answer + record), for a 200-step episode loop, per setting; the flush after each run is
    counted with it. The app runs with its lifespan, on a temporary SQLite database."""
    import tempfile

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.serving.observations import parse_act_body
    from app.serving.routed_act import act_routed
    from app.settings import Settings
    from bench.service import random_policy_bytes
    from store.policies import register_policy

    directory = Path(tempfile.mkdtemp(prefix="recording-bench-"))
    settings = Settings(data_dir=directory, database_url=f"sqlite:///{directory}/bench.db", experience_flush_seconds=60)
    app = create_app(settings)
    bodies = [
        orjson.dumps(
            {
                "observation": [0.9, 0.1, -0.4],
                "session": "bench",
                **({"reward": -1.0} if step else {}),
                **({"done": True} if step == 199 else {}),
            }
        )
        for step in range(200)
    ]
    results: dict[str, list[float]] = {"off": [], "on": [], "explore": []}
    with TestClient(app) as client:
        with app.state.database.sessions() as session:
            register_policy(session, weights=random_policy_bytes(1, 64), promote="always")
            session.commit()
        portal = client.portal
        assert portal is not None
        routing = app.state.act_runtime.routing

        async def run() -> float:
            started = time.process_time()
            for step in range(steps):
                await act_routed(routing, parse_act_body(bodies[step % 200], 1024))
            await routing.experience.flush()
            return (time.process_time() - started) / steps * 1e6

        for _ in range(rounds):
            for name, body in (
                ("off", {"record": False}),
                ("on", {"record": True}),
                ("explore", {"record": True, "explore": EXPLORE}),
            ):
                client.put(f"/models/{MODEL}/experience", json=body)
                portal.call(app.state.policy_cache.refresh)
                results[name].append(portal.call(run))
    return results


def served(seconds: float, rounds: int, connections: int) -> None:
    """The served rows alone: `python -m app` (one worker, as serve_bench.py starts it) on a fresh database."""
    import os
    import shutil
    import tempfile

    from bench.service import free_port, seed_database, service

    workdir = Path(tempfile.mkdtemp(prefix="recording-bench-"))
    try:
        seed_database(workdir, 64)
        load_before = os.getloadavg()[0]
        with service(workdir, free_port(), 1, workdir / "service.log") as base_url:
            runs = measure_recording(base_url, seconds, rounds, connections)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def row(workers: int, name: str, run: Run, versus: str = "") -> None:
        rate, p50, p99 = f"{run.rps:,.0f}", f"{run.p50_ms:.2f}", f"{run.p99_ms:.2f}"
        print(f"| {workers} | {name} | {rate} | {p50} | {p99} | {run.errors} | {versus} |")

    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| Workers | Scenario | Requests/s | p50 ms | p99 ms | Failed | vs |")
    print("|---:|---|---:|---:|---:|---:|---|")
    checks: Checks = []
    report_recording(1, runs, row, checks)
    for name, values in runs.cpu_rounds.items():
        print(f"server CPU us/step, {name}, round by round: {', '.join(f'{v:.1f}' for v in values)}")
    for check, passed, value in checks:
        print(f"{'PASS' if passed else 'FAIL'} {check}: {value}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--served", action="store_true", help="the served rows against `python -m app` instead")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per served run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the served runs")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections at full speed")
    args = parser.parse_args()
    if args.served:
        served(args.duration, args.rounds, args.connections)
        sys.exit(0)
    measured = in_process_cpu_per_step()
    off = sorted(measured["off"])[len(measured["off"]) // 2]
    print("| Setting | CPU us per session step (median) | vs off |")
    print("|---|---:|---|")
    for setting, values in measured.items():
        median = sorted(values)[len(values) // 2]
        print(f"| {setting} | {median:.2f} | +{median - off:.2f} us |")
