"""End to end with real processes: two API worker processes and a trainer worker. Two models (Pendulum and
MountainCarContinuous) trained over HTTP and served side by side; a canary split that never switches a session, even
across processes; a bad challenger rolled back by the guard on live Pendulum returns; a promotion in the middle of
running sessions that switches none of them."""

from __future__ import annotations

import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gymnasium as gym
import httpx
import numpy as np
import pytest

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready

CAR = "MountainCarContinuous-v0"
CHAMPION_EPISODES = 15  # the default preset scores about -150 to -300 here with seed 0
SESSIONS, STEPS = 50, 20


def _wait(what: str, check: object, *, deadline: float, log_path: Path) -> object:
    """Poll until `check()` is truthy: a bound on waiting, not a timing assertion."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        result = check()  # type: ignore[operator]
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {deadline} s:\n{log_path.read_text()[-4000:]}")


def _train(client: httpx.Client, log_path: Path, **body: object) -> int:
    response = client.post("/train", json=body)
    assert response.status_code == 202, response.text
    location = response.headers["location"]

    def finished() -> int | None:
        job = client.get(location).json()
        assert job["status"] not in ("failed", "cancelled"), job
        return job["policy_id"] if job["status"] == "succeeded" else None

    policy_id = _wait(f"job {location}", finished, deadline=600, log_path=log_path)
    assert isinstance(policy_id, int)
    return policy_id


def _one_shot(base_url: str, body: dict[str, object]) -> dict[str, object]:
    """One request on a fresh connection, so the kernel spreads a session's steps over both API processes."""
    with httpx.Client(base_url=base_url, headers={"Connection": "close"}, timeout=10) as client:
        response = client.post("/act", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def _pendulum_episode(base_url: str, session: str, seed: int) -> tuple[set[object], float]:
    """One real Pendulum episode with every action from /act (one keep-alive connection), rewards sent back."""
    env = gym.make("Pendulum-v1")
    observation, _ = env.reset(seed=seed)
    served: set[object] = set()
    total, reward, done = 0.0, None, False
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not done:
            body: dict[str, object] = {"observation": observation.tolist(), "session": session}
            if reward is not None:
                body["reward"] = reward
            answer = client.post("/act", json=body).json()
            served.add(answer["policy_id"])
            observation, step_reward, terminated, truncated, _ = env.step(np.asarray(answer["action"], np.float32))
            reward = float(step_reward)
            total += reward
            done = terminated or truncated
        final = client.post(
            "/act", json={"observation": observation.tolist(), "session": session, "reward": reward, "done": True}
        )
        served.add(final.json()["policy_id"])
    env.close()
    return served, total


@pytest.mark.slow
def test_models_side_by_side_canary_guard_and_promotion(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    settings = {
        "PORT": str(port),
        "WORKERS": "2",
        "EMBEDDED_WORKER": "false",
        "BOOTSTRAP_JOB": "false",
        "POLICY_REFRESH_SECONDS": "0.2",
        "LIVE_STATS_FLUSH_SECONDS": "0.2",
    }
    env = server_env(tmp_path / "data", **settings)
    worker_command = [sys.executable, "-m", "trainer", "worker", "--poll-interval", "0.2"]
    with (
        running([sys.executable, "-m", "app"], env, log_path) as api,
        running(worker_command, server_env(tmp_path / "data"), worker_log),
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        wait_until_ready(base_url, api, log_path, path="/healthz")
        # --- two models trained over HTTP, served side by side ------------------------------------------------
        champion = _train(client, worker_log, model="pendulum", episodes=CHAMPION_EPISODES, seed=0, promote="always")
        car = _train(client, worker_log, model="car", env_id=CAR, episodes=2, max_episode_steps=100, promote="always")
        bad = _train(client, worker_log, model="pendulum", episodes=1, seed=1, promote="never")
        models = {m["name"]: m for m in client.get("/models").json()["items"]}
        assert models["car"]["env_id"] == CAR and models["car"]["champion_id"] == car
        assert models["pendulum"]["champion_id"] == champion and models["pendulum"]["policies"] == 2

        def both_served() -> bool:
            pendulum_answer = _one_shot(base_url, {"observation": [1.0, 0.0, 0.0]})
            car_answer = _one_shot(base_url, {"observation": [-0.5, 0.0], "model": "car"})
            return pendulum_answer["policy_id"] == champion and car_answer["policy_id"] == car

        _wait(
            "both models served by both processes",
            lambda: all(both_served() for _ in range(6)),
            deadline=10,
            log_path=log_path,
        )

        # --- a canary at 50%: sessions split by hash, the same in both processes, never switched -----------------
        rollout = client.put(
            "/models/pendulum/rollout", json={"challenger": bad, "mode": "canary", "percent": 50, "guard": None}
        )
        assert rollout.status_code == 200, rollout.text
        time.sleep(1)  # both processes pick the rollout up (POLICY_REFRESH_SECONDS 0.2)
        served: dict[str, set[object]] = {f"split-{i}": set() for i in range(SESSIONS)}
        with ThreadPoolExecutor(4) as pool:
            for step in range(STEPS):
                bodies = [
                    {"observation": [1.0, 0.0, 0.0], "session": s, **({"reward": -1.0} if step else {})} for s in served
                ]
                for session, answer in zip(served, pool.map(lambda b: _one_shot(base_url, b), bodies), strict=True):
                    served[session].add(answer["policy_id"])
        assert all(len(policies) == 1 for policies in served.values()), served
        share = Counter(next(iter(p)) for p in served.values())[bad] / SESSIONS
        assert 0.3 <= share <= 0.7, share
        assert client.post("/models/pendulum/rollout/rollback").json()["status"] == "rolled_back"

        # --- the guard rolls the bad challenger back on live Pendulum returns ----------------------------------
        guard = {"min_episodes": 4, "max_regression": 50.0}
        rollout = client.put(
            "/models/pendulum/rollout", json={"challenger": bad, "mode": "canary", "percent": 50, "guard": guard}
        )
        assert rollout.status_code == 200, rollout.text
        rollout_id = rollout.json()["id"]
        time.sleep(1)
        returns: dict[object, list[float]] = {}
        with ThreadPoolExecutor(4) as pool:
            for batch in range(10):
                if client.get("/models/pendulum/rollout").json()["active"] is None:
                    break
                sessions = [(f"guard-{batch}-{i}", 100 * batch + i) for i in range(4)]
                for policies, total in pool.map(lambda s: _pendulum_episode(base_url, *s), sessions):
                    assert len(policies) == 1  # an episode never switches policy, rollback or not
                    returns.setdefault(next(iter(policies)), []).append(total)
        state = _wait(
            "the guard's rollback",
            lambda: (s := client.get("/models/pendulum/rollout").json())["active"] is None and s,
            deadline=10,
            log_path=log_path,
        )
        assert isinstance(state, dict)
        ended = state["history"][0]
        assert ended["id"] == rollout_id and ended["status"] == "rolled_back", ended
        assert ended["end_reason"].startswith("guard:"), ended
        assert np.mean(returns[bad]) < np.mean(returns[champion]) - 50
        live = {row["role"]: row for row in ended["live"]}
        assert live["challenger"]["episodes"] >= guard["min_episodes"]
        assert live["challenger"]["mean_return"] < live["champion"]["mean_return"] - 50
        assert "live_return_mean" in client.get("/metrics").text

        # --- a promotion in the middle of running sessions switches none of them ---------------------------------
        rollout = client.put(
            "/models/pendulum/rollout", json={"challenger": bad, "mode": "canary", "percent": 50, "guard": None}
        )
        assert rollout.status_code == 200
        time.sleep(1)
        keep_alive = {f"promo-{i}": httpx.Client(base_url=base_url, timeout=10) for i in range(10)}
        echoing = [f"echo-{i}" for i in range(10)]
        pinned: dict[str, object] = {}
        try:
            for step in range(10):
                if step == 5:
                    assert client.post("/models/pendulum/rollout/promote").json()["status"] == "promoted"
                    time.sleep(1)  # every process now routes new sessions to the new champion
                for session, connection in keep_alive.items():  # each session on its own connection (one process)
                    answer = connection.post("/act", json={"observation": [1.0, 0.0, 0.0], "session": session}).json()
                    assert pinned.setdefault(session, answer["policy_id"]) == answer["policy_id"], (session, step)
                for session in echoing:  # steps spread over both processes; each sends back the policy it was given
                    body: dict[str, object] = {"observation": [1.0, 0.0, 0.0], "session": session}
                    if session in pinned:
                        body["policy_id"] = pinned[session]
                    answer = _one_shot(base_url, body)
                    assert pinned.setdefault(session, answer["policy_id"]) == answer["policy_id"], (session, step)
        finally:
            for connection in keep_alive.values():
                connection.close()
        assert set(pinned.values()) == {champion, bad}  # both sides were running when the promotion came
        after = {
            _one_shot(base_url, {"observation": [1.0, 0.0, 0.0], "session": f"new-{i}"})["policy_id"] for i in range(10)
        }
        assert after == {bad}
        # The other model never noticed any of this.
        assert _one_shot(base_url, {"observation": [-0.5, 0.0], "model": "car"})["policy_id"] == car
