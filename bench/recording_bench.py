"""The serving benchmark's rows for recording live sessions (app.serving.experience).

- Closed loop with recording off, on, and on with exploration (Gaussian noise on 50% of sessions): the same
  closed loops as bench/rollout_bench.py (one client, each step sent when the previous answer arrived, with
  `session`, `reward` and `done`), over HTTP keep-alive and over `WS /act/stream`, interleaved `rounds` times.
  Steps per second with recording on against off (target: at least 90%).
- Recording at full speed: `connections` keep-alive connections send session steps (64 sessions that never end,
  each request completing the previous step's transition) as fast as the process answers; the row reports the
  transitions per second the process recorded (its experience_recorded_transitions counter over the run) and how
  many it dropped (target: none).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from bench.load import Run, median_run, python_load
from bench.rollout_bench import _http_loop, _stream_loop
from bench.service import http

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
    asyncio.run(_http_loop(base_url, 0.5))  # warm-up
    for _ in range(rounds):
        for name, (record, explore) in settings.items():
            set_recording(base_url, record, explore)
            runs[name][0].append(asyncio.run(_http_loop(base_url, seconds)))
            runs[name][1].append(asyncio.run(_stream_loop(base_url, seconds)))
    loops = {name: (_median_by_rate(h), _median_by_rate(s)) for name, (h, s) in runs.items()}

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
    return RecordingRuns(loops, full, recorded, dropped, sum(r.seconds for r in full_runs))


Row = Callable[..., None]  # serve_bench.row(workers, name, run, versus="")
Checks = list[tuple[str, bool, str]]


def report_recording(workers: int, runs: RecordingRuns | None, row: Row, checks: Checks) -> None:
    if runs is None:
        return
    off_http, off_stream = runs.loops["off"]
    for name, label in (("off", "recording off"), ("on", "recording on"), ("explore", "recording + explore 50%")):
        over_http, over_stream = runs.loops[name]
        vs_http = f"{over_http.rps / off_http.rps:.0%} of off's steps/s"
        vs_stream = f"{over_stream.rps / off_stream.rps:.0%} of off's steps/s"
        row(workers, f"closed loop, POST /act keep-alive, {label}", over_http, "" if name == "off" else vs_http)
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
    checks.append((f"full-speed recording drops nothing ({workers} worker(s))", runs.dropped == 0, str(runs.dropped)))
