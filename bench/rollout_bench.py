"""The serving benchmark's rows for models and rollouts: /act under a shadow rollout, and a control loop's step time
over the WebSocket stream against the same loop over HTTP keep-alive.

- Shadow: the default model gets a shadow rollout at 100% (the second seeded policy acts on every observation,
  batched off the answer, app.serving.shadow) and /act is loaded exactly as the plain /act row; the row reports
  its requests/s against that row's (target: at most 20% slower).
- Closed loop: one client, one episode after another, each step sent only when the previous answer arrived (as a
  controller does), with `session`, `reward` and `done` as a control loop sends them. Over `WS /act/stream` (one
  connection, one session) and over HTTP/1.1 keep-alive (POST /act on one connection). p50 and p99 per step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from websockets.asyncio.client import connect

from bench.http_connection import HttpConnection
from bench.load import Run, median_run
from bench.service import http

TARGET_SHADOW_RATIO = 0.80  # shadow work may cost /act at most 20% of its requests per second
STEPS_PER_EPISODE = 200
OBSERVATION = [0.9, 0.1, -0.4]


def start_shadow(base_url: str, challenger: int) -> None:
    status, body = http(
        "PUT", f"{base_url}/models/pendulum/rollout", {"challenger": challenger, "mode": "shadow", "percent": 100}
    )
    if status != 200:
        raise RuntimeError(f"PUT rollout answered {status}: {body}")
    time.sleep(1.5)  # every worker process routes by it (POLICY_REFRESH_SECONDS 0.5)


def end_shadow(base_url: str) -> dict[str, object]:
    """End the rollout; its record (shadow samples, mean divergence and latency)."""
    status, body = http("DELETE", f"{base_url}/models/pendulum/rollout")
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"DELETE rollout answered {status}: {body}")
    time.sleep(1.5)
    shadow: dict[str, object] = body["shadow"]
    return shadow


def measure_shadow(
    load: Callable[[], Run], base_url: str, challenger: int, rounds: int
) -> tuple[Run, Run, dict[str, object]]:
    """(plain /act, /act under a shadow rollout at 100%, the rollout's shadow record), interleaved `rounds` times so
    the comparison is made under the same neighbours' load."""
    plain, shadowed = [], []
    record: dict[str, object] = {}
    for _ in range(rounds):
        plain.append(load())
        start_shadow(base_url, challenger)
        shadowed.append(load())
        record = end_shadow(base_url)
    return median_run(plain), median_run(shadowed), record


def _step_body(step: int, session: str | None) -> bytes:
    body: dict[str, object] = {"observation": OBSERVATION}
    if session is not None:
        body["session"] = session
    if step:
        body["reward"] = -1.0
    if step == STEPS_PER_EPISODE - 1:
        body["done"] = True
    return orjson.dumps(body)


def _run(latencies: list[float], errors: int, seconds: float) -> Run:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] if ordered else float("nan")
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")
    return Run(len(ordered), seconds, p50 * 1e3, p99 * 1e3, errors)


async def _http_loop(base_url: str, seconds: float) -> Run:
    host, port = base_url.removeprefix("http://").split(":")
    client = HttpConnection(host, int(port))
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    episode = 0
    try:
        while time.perf_counter() - started < seconds:
            for step in range(STEPS_PER_EPISODE):
                body = _step_body(step, f"http-{episode}")
                sent = time.perf_counter()
                status, _ = await client.request("POST", "/act", body)
                latencies.append(time.perf_counter() - sent)
                errors += status != 200
            episode += 1
    finally:
        await client.close()
    return _run(latencies, errors, time.perf_counter() - started)


async def _stream_loop(base_url: str, seconds: float) -> Run:
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    async with connect(base_url.replace("http://", "ws://") + "/act/stream", compression=None) as ws:
        while time.perf_counter() - started < seconds:
            for step in range(STEPS_PER_EPISODE):
                body = _step_body(step, None).decode()
                sent = time.perf_counter()
                await ws.send(body)
                answer = await ws.recv()
                latencies.append(time.perf_counter() - sent)
                errors += b'"error"' in (answer if isinstance(answer, bytes) else answer.encode())
    return _run(latencies, errors, time.perf_counter() - started)


def closed_loops(base_url: str, seconds: float, rounds: int) -> tuple[Run, Run]:
    """(HTTP keep-alive, stream): `rounds` interleaved runs each; the run with the median p99 of each."""
    http_runs, stream_runs = [], []
    asyncio.run(_stream_loop(base_url, 0.5))  # warm-up: first connection, first session
    asyncio.run(_http_loop(base_url, 0.5))
    for _ in range(rounds):
        http_runs.append(asyncio.run(_http_loop(base_url, seconds)))
        stream_runs.append(asyncio.run(_stream_loop(base_url, seconds)))

    def median(runs: list[Run]) -> Run:
        return sorted(runs, key=lambda r: r.p99_ms)[(len(runs) - 1) // 2]

    return median(http_runs), median(stream_runs)


Row = Callable[..., None]  # serve_report.row(workers, name, run, versus="")
Checks = list[tuple[str, bool, str]]


def report_rollouts(
    workers: int,
    shadow: tuple[Run, Run, dict[str, object]] | None,
    loops: tuple[Run, Run] | None,
    row: Row,
    checks: Checks,
) -> None:
    """The table rows and target checks of the shadow and closed-loop measurements."""
    if shadow is not None:
        plain, shadowed, record = shadow
        ratio = shadowed.rps / plain.rps
        divergence = record.get("mean_divergence")
        compared = f"{record.get('samples', 0):,} compared, mean divergence {divergence:.3f}" if divergence else ""
        row(workers, "POST /act (interleaved with the next row)", plain)
        row(workers, "POST /act, shadow rollout at 100%", shadowed, f"{ratio:.0%} of /act req/s; {compared}")
        target = f"shadow ({workers} worker(s)): /act >= {TARGET_SHADOW_RATIO:.0%} of its req/s without"
        checks.append((target, ratio >= TARGET_SHADOW_RATIO, f"{ratio:.0%}"))
    if loops is not None:
        over_http, over_stream = loops
        row(workers, "closed loop, POST /act keep-alive (steps; session, reward, done)", over_http)
        factor = over_stream.p99_ms / over_http.p99_ms
        row(workers, "closed loop, WS /act/stream (steps)", over_stream, f"p99 {factor:.2f}x HTTP's")
        checks.append((f"stream p99 below HTTP's ({workers} worker(s))", factor < 1, f"{factor:.2f}x"))
