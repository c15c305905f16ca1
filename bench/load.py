"""Load generators for the serving benchmarks: wrk with a Lua body script, or an asyncio keep-alive generator."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.http_connection import HttpConnection

WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d, "non2xx": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Run:
    """One measurement: requests, wall seconds, latency percentiles, failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # transport errors and non-2xx answers
    observations_per_request: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def obs_per_second(self) -> float:
        return self.rps * self.observations_per_request


def median_run(runs: list[Run]) -> Run:
    """The run with the median requests/s (its own latencies, so the numbers of one row belong together)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    middle = ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else ordered[len(ordered) // 2]
    return Run(
        requests=middle.requests,
        seconds=middle.seconds,
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        observations_per_request=middle.observations_per_request,
        extra=middle.extra,
    )


# ---------------------------------------------------------------------------------------------------- load: wrk


def run_wrk(url: str, body_file: Path, script: Path, *, connections: int, threads: int, seconds: float) -> Run:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    completed = subprocess.run(
        command, env=dict(os.environ, BENCH_BODY_FILE=str(body_file)), capture_output=True, text=True, check=True
    )
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    return Run(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1e3,
        p99_ms=summary["p99_us"] / 1e3,
        errors=summary["errors"] + summary["non2xx"],
    )


# ---------------------------------------------------------------------------------------------------- load: Python

# Checks one answer: (status, body, context of the request) -> None, or a description of what is wrong.
Check = Callable[[int, bytes, object], str | None]


@dataclass
class PythonLoad:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    policies_seen: dict[int, int] = field(default_factory=dict)


async def python_load(
    base_url: str,
    path: str,
    bodies: list[bytes],
    *,
    connections: int,
    seconds: float,
    check: Check | None = None,
    during: Callable[[], object] | None = None,
) -> tuple[Run, PythonLoad]:
    """`connections` keep-alive connections sending round-robin bodies for `seconds` (or until `during` ends)."""
    host, port = base_url.removeprefix("http://").split(":")
    result = PythonLoad()
    stop = asyncio.Event()

    async def connection_loop(offset: int) -> None:
        client = HttpConnection(host, int(port))
        index = offset
        try:
            while not stop.is_set():
                index = (index + 1) % len(bodies)
                started = time.perf_counter()
                try:
                    status, payload = await client.request("POST", path, bodies[index])
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors += 1
                    result.problems.append(f"transport: {type(exc).__name__}: {exc}")
                    continue
                result.latencies.append(time.perf_counter() - started)
                problem = check(status, payload, index) if check else (None if status == 200 else f"status {status}")
                if problem is not None:
                    result.errors += 1
                    result.problems.append(problem)
        finally:
            await client.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(connection_loop(i * 7)) for i in range(connections)]
    if during is not None:
        await during()  # type: ignore[misc]
    else:
        await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies = sorted(result.latencies)
    if latencies:
        p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    else:
        p50 = p99 = float("nan")
    return Run(len(latencies), elapsed, p50 * 1e3, p99 * 1e3, result.errors), result
