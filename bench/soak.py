"""Soak: /act at a steady rate for a while, with a training job running and the default policy promoted
every few seconds; prints requests, errors, latency percentiles and the API process's memory at start and end.

    .venv/bin/python bench/soak.py [--seconds 60] [--rate 200] [--promote-every 3]

A benchmark, not a test: it starts its own `python -m app` (SQLite in a temporary directory, the embedded
trainer worker) on a free port, and stops it at the end. Requests are sent open-loop (request i leaves at
start + i / rate, whatever happened to the earlier ones), so a slow server shows up as latency, not as a
politely lower rate. /act requests go through bench/http_connection.py's keep-alive connections (httpx topped out
near 600 requests per second on this machine, which measured the generator, not the server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.http_connection import HttpConnection  # noqa: E402
from bench.service import free_port  # noqa: E402
from models.random_actor import random_actor_bytes  # noqa: E402
from store.db import create_db_engine, make_session_factory  # noqa: E402
from store.policies import register_policy  # noqa: E402

API_KEY = "soak-key"
BODY = orjson.dumps({"observation": [0.6, -0.8, 1.5]})
MAX_IN_FLIGHT = 32
REQUEST_TIMEOUT = 10.0


def random_actor(seed: int, hidden_size: int = 64) -> bytes:
    return random_actor_bytes(seed, hidden_size=hidden_size, weight_scale=0.3, bias_scale=0.0, eval_mean_return=-1000.0)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    policies_seen: set[int] = field(default_factory=set)
    promotions: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def one_request(connections: asyncio.Queue[HttpConnection], results: Results, scheduled: float) -> None:
    # Latency counts from when the request was due, not when it got a connection: a server that falls behind
    # shows up in the percentiles (no coordinated omission).
    connection = await connections.get()
    try:
        status, payload = await asyncio.wait_for(connection.request("POST", "/act", BODY), REQUEST_TIMEOUT)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        results.error(type(exc).__name__)
        return
    finally:
        connections.put_nowait(connection)
    results.latencies.append(time.perf_counter() - scheduled)
    if status != 200:
        results.error(f"HTTP {status}")
        return
    results.policies_seen.add(orjson.loads(payload)["policy_id"])


async def promoter(
    client: httpx.AsyncClient, policy_ids: list[int], every: float, stop: asyncio.Event, results: Results
) -> None:
    turn = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            turn += 1
            response = await client.post(
                f"/policies/{policy_ids[turn % len(policy_ids)]}/promote",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            if response.status_code == 200:
                results.promotions += 1
            else:
                results.error(f"promote HTTP {response.status_code}")


async def load(base_url: str, seconds: float, rate: float, policy_ids: list[int], promote_every: float) -> Results:
    results = Results()
    # /act goes through cheap keep-alive connections (bench/http_connection.py), at most MAX_IN_FLIGHT at a time:
    # httpx topped out near 600 requests per second here, which measured the generator, not the server.
    host, port = base_url.removeprefix("http://").split(":")
    connections: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(MAX_IN_FLIGHT):
        connections.put_nowait(HttpConnection(host, int(port)))
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        stop = asyncio.Event()
        promoting = asyncio.create_task(promoter(client, policy_ids, promote_every, stop, results))
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        total = int(seconds * rate)
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one_request(connections, results, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        stop.set()
        await promoting
    while not connections.empty():
        await connections.get_nowait().close()
    return results


def wait_ready(base_url: str, process: subprocess.Popen[bytes], deadline: float = 60) -> None:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    parser.add_argument("--promote-every", type=float, default=3.0, help="seconds between promotions")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ddpg-soak-") as tmp:
        data_dir = Path(tmp)
        policy_file = data_dir / "actor.safetensors"
        policy_file.write_bytes(random_actor(1))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATA_DIR": str(data_dir),
            "PORT": str(port),
            "POLICY_FILE": str(policy_file),
            "API_KEY": API_KEY,
            "EMBEDDED_WORKER": "true",
            "BOOTSTRAP_JOB": "false",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("DATABASE_URL", None)
        log = (data_dir / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_ready(base_url, server)
            # A second policy to alternate with, registered the way a finished job would register it.
            engine = create_db_engine(f"sqlite:///{data_dir / 'ddpg.sqlite3'}")
            with make_session_factory(engine)() as session:
                second = register_policy(session, weights=random_actor(2), promote="never")
                session.commit()
                policy_ids = [1, second.id]
            engine.dispose()
            job = httpx.post(
                f"{base_url}/train",
                json={"preset": "default", "episodes": 1000, "promote": "never"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ).json()
            for _ in range(200):  # warm up (and let the worker claim the job)
                httpx.post(f"{base_url}/act", content=BODY, headers={"Content-Type": "application/json"})
            rss_start = rss_mib(server.pid)
            started = time.perf_counter()
            results = asyncio.run(load(base_url, args.seconds, args.rate, policy_ids, args.promote_every))
            elapsed = time.perf_counter() - started
            rss_end = rss_mib(server.pid)
            progress = httpx.get(f"{base_url}/jobs/{job['id']}").json()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            log.close()

    latencies = np.array(results.latencies) * 1000
    requests = len(results.latencies) + sum(
        v for k, v in results.errors.items() if not k.startswith("HTTP") and not k.startswith("promote")
    )
    print(f"duration        {elapsed:.1f} s at a target of {args.rate:.0f} req/s (open loop)")
    print(f"requests        {requests} ({requests / elapsed:.0f} req/s achieved)")
    print(f"errors          {sum(results.errors.values())} {results.errors or ''}")
    print(
        f"latency ms      p50 {np.percentile(latencies, 50):.2f}  p99 {np.percentile(latencies, 99):.2f}  "
        f"max {latencies.max():.2f}"
    )
    print(
        f"promotions      {results.promotions} (every {args.promote_every:g} s); "
        f"policies served {sorted(results.policies_seen)}"
    )
    print(
        f"training job    {job['id']}: {progress['status']}, "
        f"{progress['progress']['episodes_done']} episodes done by the end"
    )
    print(f"API RSS MiB     start {rss_start:.1f}  end {rss_end:.1f}  growth {rss_end - rss_start:+.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
