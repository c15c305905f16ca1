"""Online learning benchmark: DDPG trained in-process vs the service's learner fed by one or two driving clients.

    python bench/learn_bench.py                 # 4,000 environment steps per row
    python bench/learn_bench.py --steps 8000

The environment is Pendulum with its observation reordered and its action rescaled to [-1, 1] (defined here, as a
client would define its own). Rows:

- `in-process`: trainer.training.train on this environment (one process, one torch thread), the default preset.
- `learner, N client(s)`: `python -m app` (SQLite, its embedded learner process), a model known by its spaces, PUT
  /models/{name}/learner with the default preset, and N client threads driving the environment over WS /act/stream
  as fast as they can, the steps split between them.
- `learner, N client(s), paced`: the same, but after every 5 episodes per client the clients wait until the learner
  has caught up (GET /models/{name}/learner: no lag, every due update run), as the end-to-end test does: the
  update-to-data ratio of a local loop, at the cost of the clients' time.

Columns: environment steps; seconds the steps took (the clients' driving, waits included, for the learner rows;
train() for the in-process row); steps per second; gradient updates done by the end of the driving and the
update-to-data ratio that is (in-process: 1 per step after the warm-up, by construction); seconds the learner then
needed to catch up (lag 0, every due update run); and the held-out mean return over 20 episodes on seeds no training
episode used, of the exported actor (in-process) or of the model's champion after the catch-up, through POST /act.

The embedded learner runs at idle CPU priority (as the embedded job worker does): while the clients and the API keep
the cores busy it falls behind, and catches up once they stop. One machine's numbers; quote them from an idle one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(REPO))

from ddpg_client import PolicyClient  # noqa: E402

ENV_ID = "bench.learn_bench:ReorderedPendulum-v0"
MODEL = "reordered"
HELDOUT_EPISODES = 20
HELDOUT_SEED_BASE = 1_000_000
PACED_ROUND = 5  # episodes per client between waits for the learner, in the paced rows


class ReorderedPendulum(gym.Env[np.ndarray, np.ndarray]):
    """Pendulum-v1 observed as [theta_dot, sin, cos], driven with actions in [-1, 1] (torque / 2)."""

    def __init__(self, max_episode_steps: int | None = None) -> None:
        self._inner = gym.make("Pendulum-v1", max_episode_steps=max_episode_steps)
        self.observation_space = gym.spaces.Box(
            low=np.array([-8.0, -1.0, -1.0], np.float32), high=np.array([8.0, 1.0, 1.0], np.float32)
        )
        self.action_space = gym.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self._inner.reset(seed=seed, options=options)
        return obs[[2, 1, 0]].astype(np.float32), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self._inner.step(2.0 * np.clip(action, -1.0, 1.0))
        return obs[[2, 1, 0]].astype(np.float32), float(reward), bool(terminated), bool(truncated), info


if "ReorderedPendulum-v0" not in gym.registry:
    gym.register("ReorderedPendulum-v0", entry_point=ReorderedPendulum)


def in_process(steps: int) -> dict[str, Any]:
    from models.training_config import make_config
    from trainer.training import train

    episodes = max(1, steps // 200)
    config = make_config("default", env_id=ENV_ID, episodes=episodes, eval_every=0, eval_episodes=HELDOUT_EPISODES)
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    total = result.episodes[-1].env_steps
    updates = max(0, total - config.learning_starts + 1)
    return {
        "steps": total,
        "seconds": seconds,
        "updates": updates,
        "utd": updates / total,
        "catch_up": 0.0,
        "heldout": result.evaluations[-1].mean_return,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(method: str, url: str, body: object | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextlib.contextmanager
def service(data_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "API_KEY", "ACT_API_KEY", "POLICY_FILE"}}
    env.update(
        DATA_DIR=str(data_dir),
        PORT=str(port),
        EMBEDDED_WORKER="false",
        EMBEDDED_SWEEP_RUNNER="false",
        EMBEDDED_LEARNER="true",
        BOOTSTRAP_JOB="false",
        LOG_LEVEL="WARNING",
        POLICY_REFRESH_SECONDS="0.2",
        EXPERIENCE_FLUSH_SECONDS="0.2",
    )
    base_url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "app.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the service exited with {process.returncode}; see {log_path}")
                with contextlib.suppress(OSError):
                    if _http("GET", f"{base_url}/healthz")[0] == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service is not up after 60 s; see {log_path}")
                time.sleep(0.2)
            yield base_url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def heldout(base_url: str) -> float:
    envs = [ReorderedPendulum() for _ in range(HELDOUT_EPISODES)]
    observations = np.stack([env.reset(seed=HELDOUT_SEED_BASE + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(HELDOUT_EPISODES)
    for _ in range(200):
        status, answer = _http("POST", f"{base_url}/act", {"model": MODEL, "observations": observations.tolist()})
        if status != 200:
            raise RuntimeError(f"POST /act: {status} {answer}")
        for i, env in enumerate(envs):
            observation, reward, *_ = env.step(np.asarray(answer["actions"][i], np.float32))
            observations[i] = observation
            returns[i] += reward
    return float(returns.mean())


def _caught_up(base_url: str, total: int) -> None:
    """Wait until the learner consumed (nearly) every recorded step and ran the updates they are due."""
    while True:
        state = _http("GET", f"{base_url}/models/{MODEL}/learner")[1]
        consumed = state["transitions_consumed"]
        if state["lag_transitions"] == 0 and consumed >= total - 400 and state["updates"] >= consumed - 300:
            return
        time.sleep(0.2)


def with_learner(steps: int, clients: int, *, paced: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="learn-bench-") as tmp, service(Path(tmp)) as base_url:
        spaces = {
            "name": MODEL,
            "observation_space": {"low": [-8.0, -1.0, -1.0], "high": [8.0, 1.0, 1.0]},
            "action_space": {"low": [-1.0], "high": [1.0]},
        }
        assert _http("POST", f"{base_url}/models", spaces)[0] == 201
        assert _http("PUT", f"{base_url}/models/{MODEL}/learner", {"publish_every": 250, "seed": 0})[0] == 202
        episodes = max(1, steps // 200 // clients)
        # Paced: rounds of PACED_ROUND episodes per client, each followed by a wait for the learner to catch up.
        rounds = [min(PACED_ROUND, episodes - i) for i in range(0, episodes, PACED_ROUND)] if paced else [episodes]
        driven = [0] * clients

        def drive(index: int, count: int, first: int) -> None:
            with PolicyClient(base_url, timeout=30) as client:
                done = client.drive(ReorderedPendulum(), model=MODEL, episodes=count, seed=index * 10_000 + first)
                driven[index] += sum(episode.steps for episode in done)

        start = time.perf_counter()
        first = 0
        for count in rounds:
            threads = [threading.Thread(target=drive, args=(i, count, first)) for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            first += count
            if paced:
                _caught_up(base_url, sum(driven))
        seconds = time.perf_counter() - start
        total = sum(driven)
        time.sleep(0.5)  # the last flush
        at_end = _http("GET", f"{base_url}/models/{MODEL}/learner")[1]
        catch_start = time.perf_counter()
        _caught_up(base_url, total)
        catch_up = time.perf_counter() - catch_start
        time.sleep(0.5)  # the last publish reaching the API
        return {
            "steps": total,
            "seconds": seconds,
            "updates": at_end["updates"],
            "utd": at_end["updates"] / total,
            "catch_up": catch_up,
            "heldout": heldout(base_url),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4000, help="environment steps per row (default 4000)")
    parser.add_argument(
        "--rows",
        default="in-process,1,2,1p,2p",
        help="which rows: in-process, and client counts free-running (1) or paced (1p)",
    )
    args = parser.parse_args(argv)
    print(
        f"{'mode':<28}{'steps':>7}{'seconds':>9}{'steps/s':>9}{'updates':>9}{'UTD':>6}{'catch-up s':>12}"
        f"{'held-out':>10}"
    )
    for row in args.rows.split(","):
        if row == "in-process":
            name, result = "in-process", in_process(args.steps)
        else:
            paced = row.endswith("p")
            clients = int(row.removesuffix("p"))
            name = f"learner, {clients} client{'s' if clients > 1 else ''}{', paced' if paced else ''}"
            result = with_learner(args.steps, clients, paced=paced)
        print(
            f"{name:<28}{result['steps']:>7}{result['seconds']:>9.1f}{result['steps'] / result['seconds']:>9.0f}"
            f"{result['updates']:>9}{result['utd']:>6.2f}{result['catch_up']:>12.1f}{result['heldout']:>10.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
