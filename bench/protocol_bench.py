"""The serving benchmark's rows for the other ways of asking: the Open Inference Protocol over gRPC beside its HTTP
routes, and the control-loop stream's binary (msgpack) frames beside its JSON ones.

    python bench/protocol_bench.py                          # 1 worker process, ~1 minute
    python bench/protocol_bench.py --duration 2 --rounds 1  # quicker look

- Inference: `connections` concurrent callers, each sending its next request when its answer arrived, for
  `duration` s, one observation and then a batch of 256 per request. HTTP: POST /v2/models/default/infer with a
  JSON tensor, over keep-alive connections (bench.http_connection). gRPC: ModelInfer with the tensor in
  raw_input_contents (as tritonclient sends it), one grpc.aio channel per caller. Both generators are asyncio
  Python in one process, so their own cost is alike; every answer's status is checked.
- Stream: one client, one episode after another, each step sent when the previous answer arrived (as
  bench/rollout_bench.py's closed loop), over `WS /act/stream` with JSON text frames, then with
  `?encoding=msgpack` binary frames. p50 and p99 per step.

Each scenario runs `rounds` times interleaved with the others; the median is reported. Numbers are printed, never
asserted; the load generator shares the machine with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import orjson
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/protocol_bench.py` from the repository root
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from app.grpc_oip.generated import grpc_predict_v2_pb2 as pb  # noqa: E402
from app.grpc_oip.generated.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub  # noqa: E402
from bench.load import Run, median_run, python_load  # noqa: E402
from bench.service import free_port, seed_database, service  # noqa: E402

BATCHES = (1, 256)
STEPS_PER_EPISODE = 200
OBSERVATION = [0.9, 0.1, -0.4]

Row = Callable[..., None]  # serve_report.row(workers, name, run, versus="")


@dataclass
class ProtocolRuns:
    """HTTP V2 and gRPC inference by batch size, and the stream's closed loop by encoding."""

    http_v2: dict[int, Run]
    grpc: dict[int, Run]
    stream: dict[str, Run]


def _observations(count: int) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.uniform([-1.0, -1.0, -8.0], [1.0, 1.0, 8.0], size=(count, 3)).astype(np.float32)


def _http_v2_body(count: int) -> bytes:
    tensor = {"name": "observation", "datatype": "FP32", "shape": [count, 3], "data": _observations(count).tolist()}
    return orjson.dumps({"inputs": [tensor]})


def _grpc_request(count: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="default")
    request.inputs.add(name="observation", datatype="FP32", shape=[count, 3])
    request.raw_input_contents.append(_observations(count).astype("<f4").tobytes())
    return request


async def _http_v2_load(base_url: str, count: int, connections: int, seconds: float) -> Run:
    run, _ = await python_load(
        base_url, "/v2/models/default/infer", [_http_v2_body(count)], connections=connections, seconds=seconds
    )
    run.observations_per_request = count
    return run


async def _grpc_load(address: str, count: int, connections: int, seconds: float) -> Run:
    """`connections` callers, one channel each, every caller's next call sent when its answer arrived."""
    request = _grpc_request(count)
    latencies: list[float] = []
    errors = 0
    stop = asyncio.Event()

    async def caller() -> None:
        nonlocal errors
        async with grpc.aio.insecure_channel(address) as channel:
            infer = GRPCInferenceServiceStub(channel).ModelInfer
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    response = await infer(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                errors += len(response.raw_output_contents) != 1

    started = time.perf_counter()
    tasks = [asyncio.create_task(caller()) for _ in range(connections)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return _run(latencies, errors, time.perf_counter() - started, count)


def _run(latencies: list[float], errors: int, seconds: float, count: int = 1) -> Run:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] if ordered else float("nan")
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")
    return Run(len(ordered), seconds, p50 * 1e3, p99 * 1e3, errors, observations_per_request=count)


def _step(step: int) -> dict[str, object]:
    body: dict[str, object] = {"observation": OBSERVATION}
    if step:
        body["reward"] = -1.0
    if step == STEPS_PER_EPISODE - 1:
        body["done"] = True
    return body


async def _stream_loop(base_url: str, encoding: str, seconds: float) -> Run:
    """One control loop over the stream in `encoding`; each message encoded as the loop goes, as a client does."""
    url = base_url.replace("http://", "ws://") + "/act/stream" + ("?encoding=msgpack" if encoding == "msgpack" else "")
    binary = encoding == "msgpack"
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    async with connect(url, compression=None) as ws:
        while time.perf_counter() - started < seconds:
            for step in range(STEPS_PER_EPISODE):
                sent = time.perf_counter()
                await ws.send(msgpack.packb(_step(step)) if binary else orjson.dumps(_step(step)).decode())
                message = await ws.recv()
                answer = msgpack.unpackb(message) if binary else orjson.loads(message)
                latencies.append(time.perf_counter() - sent)
                errors += "error" in answer
    return _run(latencies, errors, time.perf_counter() - started)


def measure_protocols(
    base_url: str, grpc_address: str, *, seconds: float, rounds: int, connections: int
) -> ProtocolRuns:
    """Every scenario `rounds` times, interleaved; the median run of each."""
    http_runs: dict[int, list[Run]] = {count: [] for count in BATCHES}
    grpc_runs: dict[int, list[Run]] = {count: [] for count in BATCHES}
    stream_runs: dict[str, list[Run]] = {"json": [], "msgpack": []}
    for count in BATCHES:  # warm-up, and a check that each scenario answers
        for warm in (
            asyncio.run(_http_v2_load(base_url, count, 1, 0.3)),
            asyncio.run(_grpc_load(grpc_address, count, 1, 0.3)),
        ):
            if warm.errors or not warm.requests:
                raise RuntimeError(f"warm-up with {count} observations failed: {warm}")
    for encoding in stream_runs:
        asyncio.run(_stream_loop(base_url, encoding, 0.3))
    for _ in range(rounds):
        for count in BATCHES:
            http_runs[count].append(asyncio.run(_http_v2_load(base_url, count, connections, seconds)))
            grpc_runs[count].append(asyncio.run(_grpc_load(grpc_address, count, connections, seconds)))
        for encoding, runs in stream_runs.items():
            runs.append(asyncio.run(_stream_loop(base_url, encoding, seconds)))
    return ProtocolRuns(
        {count: median_run(runs) for count, runs in http_runs.items()},
        {count: median_run(runs) for count, runs in grpc_runs.items()},
        {encoding: median_run(runs) for encoding, runs in stream_runs.items()},
    )


def report_protocols(workers: int, runs: ProtocolRuns | None, row: Row) -> None:
    """The table rows: HTTP V2 then gRPC for each batch size, then the stream's JSON and msgpack loops."""
    if runs is None:
        return
    for count in BATCHES:
        over_http, over_grpc = runs.http_v2[count], runs.grpc[count]
        row(workers, "Open Inference V2, HTTP JSON (POST /v2/models/default/infer)", over_http)
        row(
            workers,
            "Open Inference V2, gRPC ModelInfer (raw contents)",
            over_grpc,
            f"{over_grpc.rps / over_http.rps:.2f}x HTTP's req/s, p99 {over_grpc.p99_ms / over_http.p99_ms:.2f}x",
        )
    as_json, as_msgpack = runs.stream["json"], runs.stream["msgpack"]
    row(workers, "closed loop, WS /act/stream, JSON text frames (steps)", as_json)
    row(
        workers,
        "closed loop, WS /act/stream?encoding=msgpack, binary frames (steps)",
        as_msgpack,
        f"p50 {as_msgpack.p50_ms / as_json.p50_ms:.2f}x, p99 {as_msgpack.p99_ms / as_json.p99_ms:.2f}x JSON's",
    )


def _print_row(workers: int, name: str, run: Run, versus: str = "") -> None:
    print(
        f"| {workers} | {name} | {run.observations_per_request} | {run.rps:,.0f} | {run.obs_per_second:,.0f} | "
        f"{run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.errors} | {versus} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the median is reported")
    parser.add_argument("--connections", type=int, default=16, help="concurrent callers for inference")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--hidden-size", type=int, default=64, help="actor width (the default preset's is 64)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="protocol-bench-"))
    try:
        seed_database(workdir, args.hidden_size)
        grpc_port = free_port()
        with service(workdir, free_port(), args.workers, workdir / "service.log", grpc_port=grpc_port) as base_url:
            runs = measure_protocols(
                base_url,
                f"127.0.0.1:{grpc_port}",
                seconds=args.duration,
                rounds=args.rounds,
                connections=args.connections,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.workers} worker(s), {args.connections} concurrent callers for inference, {args.duration:g} s per "
        f"measurement, median of {args.rounds} interleaved rounds; actor hidden size {args.hidden_size}."
    )
    print()
    print("| Workers | Scenario | Obs/request | Requests/s | Obs/s | p50 ms | p99 ms | Failed | vs |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    report_protocols(args.workers, runs, _print_row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
