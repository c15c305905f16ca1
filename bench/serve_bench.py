"""Serving benchmark: POST /act against the floor of its server, batches, training and promotions.

    python bench/serve_bench.py                        # 1 then 2 worker processes, ~3 minutes
    python bench/serve_bench.py --duration 3 --rounds 1 --workers 1   # quicker look

The service runs as users run it (`python -m app`: uvicorn with uvloop + httptools, access log off, an
embedded trainer worker) on a fresh SQLite database holding two random policies of the default preset's
shape (obs 3, hidden 64, act 1). Load comes from a second process: wrk (Debian package `wrk`) with a Lua
script for the POST body, or, when wrk is absent, the asyncio HTTP/1.1 keep-alive generator below. Scenarios,
each run `--rounds` times interleaved with the others (the median is reported, so a neighbour's burst of CPU
use hits every scenario alike):

- The floor: bench/floor_app.py, a bare ASGI app that reads the body and answers a constant, run as a server
  process of its own by uvicorn with the service's own options (`app.launcher.uvicorn_options`) and loaded by the
  same generator in the same rounds, just before /act. `/act` is reported as a share of its requests/s (and the
  range of that share round by round) and a multiple of its p99.
- `POST /bench/noop` with one observation (BENCH_ENDPOINTS=1): parses and validates the same body as /act on the
  same path through the app, returns a constant: what /act costs beyond it is choosing the policy, the forward
  pass and serialising.
- `POST /act` with 1, 64 and 1024 observations (observations per second).
- `POST /act` with one observation while a training job runs in the embedded worker (1 worker process only).
- `POST /act` during 20 promotions (POST /policies/{id}/promote, alternating the two policies) from the
  Python generator, which checks every response: status 200, policy_id one of the two, and the action equal
  to that policy's local numpy forward pass of the observation sent. The same generator without promotions
  gives the comparison p99.
- `POST /act` under a shadow rollout at 100%, and a control loop's step over `WS /act/stream` against the same
  loop over HTTP keep-alive (bench/rollout_bench.py).
- The Open Inference Protocol over HTTP (JSON) and over gRPC (ModelInfer, raw contents), one observation and a
  batch of 256; and the stream's closed loop with JSON text frames against msgpack binary frames
  (bench/protocol_bench.py).
- The same closed loops with recording off, on, and on with exploration, and the transitions per second one
  process records at full speed with the count it dropped (bench/recording_bench.py; `--no-recording` skips).

`--idle-only` measures the floor, noop and /act rows alone (a quick side-by-side look, ~1 minute at the defaults).

Every row also gives the server's CPU time per request (user + system time of its processes, the embedded trainer
left out, over the requests answered): on cores shared with other work it moves far less than requests per second.

Numbers are printed (the tables: bench/serve_report.py), never asserted. The load generator shares the machine
with the server, so these are lower bounds on what the server does with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/serve_bench.py` from the repository root
    sys.path.insert(0, str(REPO))

from bench.http_connection import HttpConnection  # noqa: E402
from bench.load import WRK_SCRIPT, Run, median_run, python_load, run_wrk  # noqa: E402
from bench.protocol_bench import measure_protocols  # noqa: E402
from bench.recording_bench import measure_recording  # noqa: E402
from bench.rollout_bench import closed_loops, measure_shadow  # noqa: E402
from bench.serve_report import Promotions, WorkerResults, report  # noqa: E402
from bench.service import floor_service, free_port, http, seed_database, server_cpu_seconds, service  # noqa: E402
from models.policy import NumpyActor  # noqa: E402


def observations(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([-1.0, -1.0, -8.0], [1.0, 1.0, 8.0], size=(count, 3)).round(6)


def act_body(count: int, seed: int = 0) -> bytes:
    obs = observations(count, seed).tolist()
    return orjson.dumps({"observation": obs[0]} if count == 1 else {"observations": obs})


# ---------------------------------------------------------------------------------------------------- scenarios


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    use_wrk: bool
    script: Path
    body_files: dict[int, Path]

    def load(self, base_url: str, path: str, count: int) -> Run:
        """`connections` connections posting the body of `count` observations to `path` for `duration` s; the
        server's CPU time per request in `extra["cpu_us"]`."""
        cpu_before = server_cpu_seconds(base_url)
        if self.use_wrk:
            run = run_wrk(
                base_url + path,
                self.body_files[count],
                self.script,
                connections=self.args.connections,
                threads=self.args.wrk_threads,
                seconds=self.args.duration,
            )
        else:
            body = self.body_files[count].read_bytes()
            run, _ = asyncio.run(
                python_load(base_url, path, [body], connections=self.args.connections, seconds=self.args.duration)
            )
        run.observations_per_request = count
        if run.requests:
            run.extra["cpu_us"] = (server_cpu_seconds(base_url) - cpu_before) / run.requests * 1e6
        return run


def measure_idle(bench: Bench, base_url: str, floor_url: str) -> dict[str, Run]:
    """The floor, noop, act x1, x64, x1024, `rounds` times interleaved; the median of each."""
    # The floor and /act back to back in each round: the pair whose ratio is reported sees the same neighbours.
    scenarios = {
        "floor": (floor_url, "/act", 1),
        "act1": (base_url, "/act", 1),
        "noop": (base_url, "/bench/noop", 1),
        "act64": (base_url, "/act", 64),
        "act1024": (base_url, "/act", 1024),
    }
    for url, path, count in scenarios.values():  # warm-up (and a check that each scenario answers 200)
        _warm(bench, url + path, count)
    runs: dict[str, list[Run]] = {name: [] for name in scenarios}
    for _ in range(bench.args.rounds):
        for name, (url, path, count) in scenarios.items():
            runs[name].append(bench.load(url, path, count))
    medians = {name: median_run(r) for name, r in runs.items()}
    # The spread of /act's share of the floor over the rounds, each round's pair measured back to back.
    shares = sorted(a.rps / f.rps for a, f in zip(runs["act1"], runs["floor"], strict=True))
    medians["act1"].extra["floor_shares"] = shares
    return medians


def _warm(bench: Bench, url: str, count: int) -> None:
    body = bench.body_files[count].read_bytes()
    for _ in range(50):
        status, _ = http("POST", url, orjson.loads(body))
        if status != 200:
            raise RuntimeError(f"warm-up POST {url} answered {status}")


def measure_training(bench: Bench, base_url: str) -> tuple[Run, dict[str, object]]:
    """/act x1 while the embedded worker trains (a long job, cancelled afterwards)."""
    status, job = http("POST", f"{base_url}/train", {"episodes": 1000, "eval_every": 0, "promote": "never", "seed": 0})
    if status != 202 or not isinstance(job, dict):
        raise RuntimeError(f"POST /train answered {status}: {job}")
    job_url = f"{base_url}/jobs/{job['id']}"
    deadline = time.monotonic() + 60
    while True:  # until gradient updates run: the first episode done (warm-up steps are cheap)
        _, state = http("GET", job_url)
        assert isinstance(state, dict)
        if state["status"] == "running" and state["progress"]["episodes_done"] >= 1:
            break
        if state["status"] not in ("queued", "running") or time.monotonic() > deadline:
            raise RuntimeError(f"training job did not start: {state}")
        time.sleep(0.2)
    runs = [bench.load(base_url, "/act", 1) for _ in range(bench.args.rounds)]
    _, state = http("GET", job_url)
    assert isinstance(state, dict)
    http("POST", f"{job_url}/cancel")
    return median_run(runs), {"status": state["status"], "episodes_done": state["progress"]["episodes_done"]}


def measure_promotions(bench: Bench, base_url: str, actors: dict[int, NumpyActor]) -> Promotions:
    """Python load (checking every answer) without promotions, then during `promotions` promotions."""
    obs = observations(256, seed=7).astype(np.float32)
    bodies = [orjson.dumps({"observation": row.tolist()}) for row in obs]
    # What each policy answers for each observation, computed here with the server's own one-observation route.
    expected = {pid: np.array([actor.act_one(row) for row in obs]) for pid, actor in actors.items()}
    ids = sorted(actors)
    seen: dict[int, int] = {}

    def check(status: int, payload: bytes, index: object) -> str | None:
        if status != 200:
            return f"status {status}: {payload[:200]!r}"
        answer = orjson.loads(payload)
        policy_id = answer.get("policy_id")
        if policy_id not in expected:
            return f"wrong: policy_id {policy_id!r} is not one of {ids}"
        seen[policy_id] = seen.get(policy_id, 0) + 1
        assert isinstance(index, int)
        if not np.allclose(answer["action"], expected[policy_id][index], rtol=1e-5, atol=1e-6):
            return f"wrong: action {answer['action']} is not policy {policy_id}'s {expected[policy_id][index].tolist()}"
        return None

    host, port = base_url.removeprefix("http://").split(":")
    promote_problems: list[str] = []
    promoted = 0

    async def promote_all() -> None:
        nonlocal promoted
        client = HttpConnection(host, int(port))
        await asyncio.sleep(bench.args.promotion_interval)
        for i in range(bench.args.promotions):
            target = ids[(i + 1) % len(ids)]  # the first promotion switches away from the current default
            status, payload = await client.request("POST", f"/policies/{target}/promote", b"")
            if status == 200:
                promoted += 1
            else:
                promote_problems.append(f"promote {target}: {status} {payload[:200]!r}")
            await asyncio.sleep(bench.args.promotion_interval)
        await client.close()

    connections = bench.args.connections
    idle, _ = asyncio.run(
        python_load(base_url, "/act", bodies, connections=connections, seconds=bench.args.duration, check=check)
    )
    seen.clear()
    during, load = asyncio.run(
        python_load(base_url, "/act", bodies, connections=connections, seconds=0, check=check, during=promote_all)
    )
    return Promotions(idle, during, promoted, dict(sorted(seen.items())), load.problems + promote_problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the median is reported")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to measure, comma separated")
    parser.add_argument("--hidden-size", type=int, default=64, help="actor width (the default preset's is 64)")
    parser.add_argument(
        "--ppo-like",
        action="store_true",
        help="serve policies of the general format (tanh, clip, observation normalization) instead of the seed Actor",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (one keeps a core for the server)")
    parser.add_argument("--load-generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--promotions", type=int, default=20, help="promotions during the promotion scenario")
    parser.add_argument("--promotion-interval", type=float, default=0.4, help="seconds between promotions")
    parser.add_argument("--no-training", action="store_true", help="skip the /act-during-training scenario")
    parser.add_argument("--no-recording", action="store_true", help="skip the recording scenarios")
    parser.add_argument("--idle-only", action="store_true", help="only the floor, noop and /act rows")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args()

    use_wrk = args.load_generator == "wrk" or (args.load_generator == "auto" and shutil.which("wrk") is not None)
    if args.load_generator == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    body_files = {}
    for count in (1, 64, 1024):
        body_files[count] = workdir / f"body-{count}.json"
        body_files[count].write_bytes(act_body(count))
    bench = Bench(args, workdir, use_wrk, script, body_files)
    load_before = os.getloadavg()
    started = time.monotonic()
    results: dict[int, WorkerResults] = {}
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            data_dir = workdir / f"data-{workers}"
            data_dir.mkdir()
            actors = seed_database(data_dir, args.hidden_size, ppo_like=args.ppo_like)
            log_path = workdir / f"service-{workers}.log"
            print(f"# {workers} worker(s): measuring ...", file=sys.stderr, flush=True)
            grpc_port = free_port()
            floor_log = workdir / f"floor-{workers}.log"
            with (
                service(data_dir, free_port(), workers, log_path, grpc_port=grpc_port) as base_url,
                floor_service(data_dir, free_port(), workers, floor_log) as floor_url,
            ):
                idle = measure_idle(bench, base_url, floor_url)
                if args.idle_only:
                    results[workers] = WorkerResults(idle)
                    continue
                training, job = (None, {}) if workers > 1 or args.no_training else measure_training(bench, base_url)
                promotions = measure_promotions(bench, base_url, actors)
                load_act = lambda: bench.load(base_url, "/act", 1)  # noqa: E731
                shadow = measure_shadow(load_act, base_url, max(actors), args.rounds)
                loops = closed_loops(base_url, args.duration, args.rounds)
                protocols = measure_protocols(
                    base_url,
                    f"127.0.0.1:{grpc_port}",
                    seconds=args.duration,
                    rounds=args.rounds,
                    connections=args.connections,
                )
                recording = (
                    None
                    if args.no_recording
                    else measure_recording(base_url, args.duration, args.rounds, args.connections)
                )
            results[workers] = WorkerResults(idle, promotions, training, job, shadow, loops, protocols, recording)
    finally:
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    report(args, results, use_wrk=use_wrk, load=(load_before[0], load_after[0]), elapsed=time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
