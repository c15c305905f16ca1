"""Imported policies under load: an SB3 TD3 actor of SB3's default size ([400, 300], ReLU, tanh-scaled) and a PPO
actor behind VecNormalize statistics ([64, 64], Tanh, normalized input, clipped output), each uploaded through
POST /models/{name}/policies as a user would, then served by /act by policy id, 1 and 64 observations a request.

    python bench/serve_bench.py --imports-only --duration 3 --rounds 1      # just these rows

The zips are built by Stable-Baselines3 itself (barely trained: the forward pass costs the same, and a few updates
fill the optimizer state a real zip carries), so this needs the `test` extra. Each upload's time and size are
reported with the rows; an SB3 TD3 [400, 300] zip with its optimizer state is over the 4 MiB /act body limit, which
is why uploads have their own (MAX_UPLOAD_BYTES).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.load import Run, median_run, python_load, run_wrk

MODEL = "pendulum"


@dataclass
class ImportedRows:
    """One imported policy's upload and its /act runs by observations per request."""

    label: str
    zip_bytes: int
    upload_seconds: float
    origin: str
    runs: dict[int, Run]


def build_zips(workdir: Path) -> dict[str, tuple[Path, str | None]]:
    """The two zips (and the normalized one's statistics as the upload's JSON field), saved by SB3."""
    import gymnasium as gym
    from stable_baselines3 import PPO, TD3

    env_id = "Pendulum-v1"
    # SB3's default net_arch for TD3: [400, 300]. A few updates, so the zip carries Adam's state as a trained one does.
    td3 = TD3("MlpPolicy", env_id, seed=0, device="cpu", learning_starts=100, train_freq=4, gradient_steps=1)
    td3.learn(104)
    td3.save(workdir / "td3_400_300.zip")
    ppo = PPO("MlpPolicy", env_id, seed=0, device="cpu")  # default: pi [64, 64], Tanh
    ppo.save(workdir / "ppo_64_64.zip")
    space = gym.make(env_id).observation_space
    space.seed(0)
    samples = np.stack([space.sample() for _ in range(1000)])
    stats = json.dumps({"mean": samples.mean(0).tolist(), "var": samples.var(0).tolist(), "clip": 10.0})
    return {
        "SB3 TD3 [400, 300] (imported)": (workdir / "td3_400_300.zip", None),
        "SB3 PPO [64, 64] + VecNormalize (imported)": (workdir / "ppo_64_64.zip", stats),
    }


def upload(base_url: str, path: Path, stats: str | None) -> tuple[int, float, str]:
    """(policy id, seconds, origin) of one upload; raises on anything but 201."""
    data = {"promote": "never", **({} if stats is None else {"obs_normalization": stats})}
    started = time.perf_counter()
    response = httpx.post(
        f"{base_url}/models/{MODEL}/policies", files={"file": (path.name, path.read_bytes())}, data=data, timeout=60
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"uploading {path.name} answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    return int(body["id"]), elapsed, str(body["origin"])


def measure_imports(
    base_url: str,
    workdir: Path,
    *,
    body: Callable[[int, int], bytes],
    use_wrk: bool,
    script: Path,
    connections: int,
    wrk_threads: int,
    seconds: float,
    rounds: int,
) -> list[ImportedRows]:
    """Upload both zips, then /act by policy id with 1 and 64 observations, `rounds` interleaved runs each."""
    results = []
    for label, (path, stats) in build_zips(workdir).items():
        policy_id, upload_seconds, origin = upload(base_url, path, stats)
        bodies: dict[int, Path] = {}
        for count in (1, 64):
            request = orjson.loads(body(count, 0))
            request["policy_id"] = policy_id
            bodies[count] = workdir / f"import-{policy_id}-{count}.json"
            bodies[count].write_bytes(orjson.dumps(request))
            for _ in range(20):  # warm-up: the policy loads into the process's cache on first use
                httpx.post(f"{base_url}/act", content=bodies[count].read_bytes(), timeout=10).raise_for_status()
        runs: dict[int, list[Run]] = {1: [], 64: []}
        for _ in range(rounds):
            for count, file in bodies.items():
                if use_wrk:
                    run = run_wrk(
                        base_url + "/act", file, script, connections=connections, threads=wrk_threads, seconds=seconds
                    )
                else:
                    run, _ = asyncio.run(
                        python_load(base_url, "/act", [file.read_bytes()], connections=connections, seconds=seconds)
                    )
                run.observations_per_request = count
                runs[count].append(run)
        results.append(
            ImportedRows(
                label, path.stat().st_size, upload_seconds, origin, {c: median_run(r) for c, r in runs.items()}
            )
        )
    return results
