"""Recording and exporting live experience: what one API process's closed loop costs with recording on, what a
recorded transition weighs stored, and how fast the exports are built. Prints a table; asserts nothing.

    .venv/bin/python bench/experience_bench.py [--duration 3] [--rounds 2] [--loops 4]

- Closed loop: `--loops` clients, each one episode after another on its own keep-alive connection and session,
  each step sent only when the previous answer arrived (`session`, `reward`, `done` as a controller sends them),
  Pendulum-like observations (cos, sin, angular velocity of a random walk, so that they compress like real ones).
  Recording off and on, interleaved `--rounds` times; the median run of each.
- Stored: chunk bytes per transition (the zstd Arrow chunks, models.experience_chunks) from GET
  /models/pendulum/experience after the recording runs.
- Export: GET /models/pendulum/experience/dataset for format=minari and format=parquet, wall time, transitions/s
  and file size.
- The rates for 100 API processes (docs/DEPLOYMENT.md) are these per-process figures times 100.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(REPO))

from bench.http_connection import HttpConnection  # noqa: E402
from bench.service import free_port, http, seed_database, service  # noqa: E402

STEPS_PER_EPISODE = 200


def _observations(seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    theta = np.cumsum(rng.normal(0, 0.2, STEPS_PER_EPISODE + 1))
    velocity = np.clip(np.diff(theta, prepend=theta[0]) * 20, -8, 8)
    return np.stack([np.cos(theta), np.sin(theta), velocity], axis=1).astype(np.float32).tolist()


async def _loop(host: str, port: int, index: int, seconds: float, started: float) -> tuple[int, int]:
    client = HttpConnection(host, port)
    steps = errors = episode = 0
    try:
        while time.perf_counter() - started < seconds:
            observations = _observations(index * 100_000 + episode)
            session = f"bench-{index}-{episode}"
            for step in range(STEPS_PER_EPISODE + 1):
                body: dict[str, object] = {"session": session, "observation": observations[step]}
                if step:
                    body["reward"] = -float(step % 7)
                if step == STEPS_PER_EPISODE:
                    body["truncated"] = True
                status, _ = await client.request("POST", "/act", orjson.dumps(body))
                steps += 1
                errors += status != 200
            episode += 1
    finally:
        await client.close()
    return steps, errors


def closed_loop(base_url: str, loops: int, seconds: float) -> tuple[float, int]:
    """(steps per second over all loops, errors)."""
    host, port = base_url.removeprefix("http://").split(":")

    async def run() -> tuple[float, int]:
        started = time.perf_counter()
        results = await asyncio.gather(*(_loop(host, int(port), i, seconds, started) for i in range(loops)))
        elapsed = time.perf_counter() - started
        return sum(r[0] for r in results) / elapsed, sum(r[1] for r in results)

    return asyncio.run(run())


def set_recording(base_url: str, record: bool) -> None:
    status, body = http("PUT", f"{base_url}/models/pendulum/experience", {"record": record, "max_transitions": 10**8})
    if status != 200:
        raise RuntimeError(f"PUT experience answered {status}: {body}")
    time.sleep(1.0)  # every process follows within one registry poll (POLICY_REFRESH_SECONDS 0.5)


def export(base_url: str, export_format: str) -> tuple[float, int, int]:
    """(seconds, bytes, transitions in the file) of one export."""
    started = time.perf_counter()
    url = f"{base_url}/models/pendulum/experience/dataset?format={export_format}"
    with urllib.request.urlopen(url, timeout=600) as response:
        size = len(response.read())
        transitions = int(response.headers.get("X-Experience-Transitions", "0"))
    return time.perf_counter() - started, size, transitions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per closed-loop run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved off/on repetitions; the median is shown")
    parser.add_argument("--loops", type=int, default=4, help="concurrent closed-loop clients")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        seed_database(data_dir, hidden_size=64)
        with service(data_dir, free_port(), 1, Path(tmp) / "app.log") as base_url:
            closed_loop(base_url, args.loops, 0.5)  # warm-up
            off, on = [], []
            for _ in range(args.rounds):
                set_recording(base_url, False)
                off.append(closed_loop(base_url, args.loops, args.duration))
                set_recording(base_url, True)
                on.append(closed_loop(base_url, args.loops, args.duration))
            set_recording(base_url, False)
            time.sleep(1.5)  # the last flush
            _, stats = http("GET", f"{base_url}/models/pendulum/experience")
            assert isinstance(stats, dict)
            exports = {fmt: export(base_url, fmt) for fmt in ("parquet", "minari")}

    off_rate = statistics.median(r for r, _ in off)
    on_rate = statistics.median(r for r, _ in on)
    errors = sum(e for _, e in off) + sum(e for _, e in on)
    transitions, size = int(stats["transitions"]), int(stats["bytes"])
    per_transition = size / transitions if transitions else math.nan
    print(f"closed loop, {args.loops} clients, 1 API process: {off_rate:,.0f} steps/s recording off, "
          f"{on_rate:,.0f} recording on ({on_rate / off_rate:.0%}); errors {errors}")  # fmt: skip
    print(f"stored: {transitions:,} transitions in {stats['chunks']} chunks, {size:,} bytes, "
          f"{per_transition:.1f} bytes/transition; dropped {stats['dropped']}")  # fmt: skip
    for fmt, (seconds, file_size, rows) in exports.items():
        print(f"export {fmt}: {rows:,} transitions in {seconds:.2f} s ({rows / seconds:,.0f}/s), {file_size:,} bytes")
    print(f"100 processes at {on_rate:,.0f} steps/s: {100 * on_rate:,.0f} transitions/s, "
          f"{100 * on_rate * per_transition / 1e6:,.1f} MB/s of chunks, 100 chunk rows/s (one per process per "
          f"flush second)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
