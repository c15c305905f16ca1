"""The service under benchmark: `python -m app` started as a user starts it, on a database seeded with policies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(REPO))

from models.policy import NumpyActor  # noqa: E402
from models.random_actor import random_actor_bytes, random_policy_weights  # noqa: E402
from models.weights import encode_policy  # noqa: E402
from store.db import create_db_engine, default_database_url, make_session_factory, migrate  # noqa: E402
from store.policies import register_policy  # noqa: E402


def random_policy_bytes(seed: int, hidden_size: int) -> bytes:
    """A valid actor of Pendulum's shape with random weights (scaled like an initialised network)."""
    return random_actor_bytes(
        seed, hidden_size=hidden_size, weight_scale=None, bias_scale=0.1, eval_mean_return=-150.0 - seed
    )


def ppo_like_policy_bytes(seed: int, hidden_size: int) -> bytes:
    """A policy of the general format on Pendulum's shape: tanh hidden layers, clip output, observation normalization
    (what an imported SB3 PPO MlpPolicy under VecNormalize looks like)."""
    weights = random_policy_weights(
        seed, sizes=(3, hidden_size, hidden_size, 1), activations=["tanh", "tanh"], output="clip", normalized=True
    )
    return encode_policy(weights)


def seed_database(data_dir: Path, hidden_size: int, *, ppo_like: bool = False) -> dict[int, NumpyActor]:
    """Two policies in a fresh database, the first one the default; their local actors by id.

    `ppo_like`: policies of the general format (`ppo_like_policy_bytes`) instead of the seed Actor's."""
    url = default_database_url(data_dir)
    migrate(url)
    engine = create_db_engine(url)
    actors: dict[int, NumpyActor] = {}
    try:
        with make_session_factory(engine)() as session:
            for seed, rule in ((1, "always"), (2, "never")):
                make = ppo_like_policy_bytes if ppo_like else random_policy_bytes
                weights = make(seed, hidden_size)
                policy = register_policy(session, weights=weights, promote=rule)
                session.flush()
                actors[policy.id] = NumpyActor.from_bytes(weights)
            session.commit()
    finally:
        engine.dispose()
    return actors


# The process group of each running server, by base URL (for server_cpu_seconds).
_PROCESS_GROUPS: dict[str, int] = {}


def server_cpu_seconds(base_url: str) -> float:
    """CPU seconds (user + system) used so far by the server at `base_url`: the processes of its group (uvicorn and
    its workers), not the embedded trainer's (`-m trainer`). Divided by the requests of a measurement, this is its
    cost per request, which neighbours sharing the cores do not change the way they change requests per second."""
    group = _PROCESS_GROUPS[base_url]
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group or b"-m\0trainer" in (stat.parent / "cmdline").read_bytes():
                continue
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: dict[str, object] | None = None, timeout: float = 10) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextlib.contextmanager
def service(data_dir: Path, port: int, workers: int, log_path: Path, *, grpc_port: int | None = None) -> Iterator[str]:
    """`python -m app` as a user starts it (plus the benchmark endpoint, and gRPC inference on `grpc_port` when
    given); its base URL once /readyz is 200."""
    env = _clean_environment()
    env.update(
        DATA_DIR=str(data_dir),
        PORT=str(port),
        WORKERS=str(workers),
        EMBEDDED_WORKER="true",
        BOOTSTRAP_JOB="false",
        BENCH_ENDPOINTS="1",
        LOG_LEVEL="WARNING",
        POLICY_REFRESH_SECONDS="0.5",
    )
    if grpc_port is not None:
        env["GRPC_PORT"] = str(grpc_port)
    with _server([sys.executable, "-m", "app"], env, port, log_path) as base_url:
        yield base_url


@contextlib.contextmanager
def floor_service(data_dir: Path, port: int, workers: int, log_path: Path) -> Iterator[str]:
    """bench/floor_app.py (a bare ASGI app answering a constant) on the service's own uvicorn options."""
    env = _clean_environment()
    env.update(DATA_DIR=str(data_dir), PORT=str(port), WORKERS=str(workers), LOG_LEVEL="WARNING")
    with _server([sys.executable, "-m", "bench.floor_app"], env, port, log_path) as base_url:
        yield base_url


def _clean_environment() -> dict[str, str]:
    dropped = {"DATABASE_URL", "API_KEY", "ACT_API_KEY", "POLICY_FILE", "GRPC_PORT", "EXPERIENCE_URL"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """A server process of its own process group; its base URL once GET /readyz answers 200; stopped after."""
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
                with contextlib.suppress(OSError):
                    if http("GET", f"{base_url}/readyz", timeout=2)[0] == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server is not ready after 60 s; see {log_path}")
                time.sleep(0.2)
            _PROCESS_GROUPS[base_url] = process.pid
            yield base_url
        finally:
            _PROCESS_GROUPS.pop(base_url, None)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(45)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
