"""Live returns under faults and hostile rewards, with a real `python -m app`:

- a flush whose COMMIT reply is lost (the proxy between the API and PostgreSQL drops it after the server committed)
  is retried and counted once: the database's episode counts equal the episodes the clients were acknowledged;
- a session that sends `"reward": -3.4e38` cannot keep a challenger 900 worse per episode alive: refused (422) where
  the model declares a reward range, left out by the guard's trimmed mean where it declares none.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from store.db import create_db_engine, make_session_factory
from store.policies import register_policy
from store.registry import get_model
from store.tables.serving_records import LiveReturn
from tests.app.factories import make_policy_bytes
from tests.reliability.conftest import Api, Processes, wait_for
from tests.reliability.db_proxy import DbProxy

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

OBS = [0.3, -0.2, 0.5]


def _register(database_url: str, seed: int, *, model: str = "pendulum", promote: str = "never") -> int:
    """A policy of `model`, registered in the database as a worker would."""
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            found = get_model(session, model)
            model_id = None if found is None else found.id
            policy = register_policy(session, weights=make_policy_bytes(seed), model_id=model_id, promote=promote)
            session.commit()
            return policy.id
    finally:
        engine.dispose()


def _live_counts(database_url: str, rollout_id: int) -> dict[int, int]:
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.execute(
                select(LiveReturn.policy_id, func.sum(LiveReturn.episodes))
                .where(LiveReturn.rollout_id == rollout_id)
                .group_by(LiveReturn.policy_id)
            )
            return {policy_id: int(total) for policy_id, total in rows}
    finally:
        engine.dispose()


def _start_canary(api: Api, model: str, challenger: int, guard: dict[str, Any] | None) -> int:
    response = httpx.put(
        f"{api.base_url}/models/{model}/rollout",
        json={"challenger": challenger, "mode": "canary", "percent": 50, "guard": guard},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    rollout_id: int = response.json()["id"]
    return rollout_id


def _episode(client: httpx.Client, model: str, session: str, rewards: list[float]) -> tuple[int | None, int]:
    """One episode: len(rewards) + 1 steps, the last with `done`. (policy id, status of the `done` step)."""
    first = client.post("/act", json={"observation": OBS, "model": model, "session": session})
    assert first.status_code == 200, first.text
    policy_id: int = first.json()["policy_id"]
    status = 200
    for index, reward in enumerate(rewards):
        done = index == len(rewards) - 1
        body = {"observation": OBS, "model": model, "session": session, "reward": reward, "done": done}
        response = client.post("/act", json=body)
        status = response.status_code
        if status != 200:
            return None, status
    return policy_id, status


def test_a_lost_flush_reply_is_counted_once(
    processes: Processes, db_proxy: tuple[DbProxy, str], postgres_url: str, policy_file: Path
) -> None:
    proxy, url = db_proxy
    api = processes.api(url, POLICY_FILE=str(policy_file), LIVE_STATS_FLUSH_SECONDS="0.2")
    challenger = _register(postgres_url, 8)
    wait_for(lambda: httpx.get(f"{api.base_url}/policies/{challenger}", timeout=5).status_code == 200, "challenger")
    rollout_id = _start_canary(api, "pendulum", challenger, None)

    acknowledged: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=api.base_url, timeout=30) as http:
            episode = 0
            while not stop.is_set():
                policy_id, status = _episode(http, "pendulum", f"c{index}-e{episode}", [-1.0, -2.0])
                if status == 200 and policy_id is not None:
                    with lock:
                        acknowledged[policy_id] += 1
                episode += 1

    threads = [threading.Thread(target=client, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(_live_counts(postgres_url, rollout_id).values()) >= 50, "some flushed episodes")
        proxy.lose_next_commit(marker=b"INSERT INTO live_returns ")  # only a flush with episodes
        assert proxy.wait_commit_lost(30), processes.logs()
        at_loss = sum(_live_counts(postgres_url, rollout_id).values())
        wait_for(lambda: sum(_live_counts(postgres_url, rollout_id).values()) >= at_loss + 50, "episodes after it")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    expected = dict(acknowledged)
    logger.info(
        "acknowledged episodes per policy %s; stored at the end %s", expected, _live_counts(postgres_url, rollout_id)
    )
    wait_for(
        lambda: _live_counts(postgres_url, rollout_id) == expected,
        f"the counts to reach {expected}",
        deadline=30,
        logs=lambda: f"stored: {_live_counts(postgres_url, rollout_id)}",
    )
    assert "cannot write live returns batch" in api.log_path.read_text(), api.log()  # the lost reply was noticed
    threading.Event().wait(1.0)  # a few more flush intervals: nothing is added twice later either
    assert _live_counts(postgres_url, rollout_id) == expected
    assert proxy.commits_lost == 1 and len(expected) == 2 and challenger in expected


@pytest.mark.parametrize("declared", [True, False], ids=["declared-range", "no-range"])
def test_a_poisoned_reward_cannot_keep_a_much_worse_challenger(
    processes: Processes, sqlite_url: str, policy_file: Path, declared: bool
) -> None:
    api = processes.api(sqlite_url, ready="/healthz", LIVE_STATS_FLUSH_SECONDS="0.2")
    model = "pendulum" if declared else "free"
    if not declared:
        created = httpx.post(
            f"{api.base_url}/models", json={"name": model, "env_id": "Pendulum-v1", "reward_range": None}, timeout=10
        )
        assert created.status_code == 201 and created.json()["spaces"]["reward_range"] is None, created.text
    champion = _register(sqlite_url, 1, model=model, promote="always")
    challenger = _register(sqlite_url, 2, model=model)
    wait_for(lambda: httpx.get(f"{api.base_url}/models/{model}", timeout=5).json()["champion_id"] == champion, "ready")
    rollout_id = _start_canary(api, model, challenger, {"min_episodes": 10, "max_regression": 100.0})

    # Per episode: the champion returns -30, the challenger -930 (60 steps each, within Pendulum's range).
    per_step = {champion: -0.5, challenger: -15.5}
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        # The hostile session (on the champion's side) reports a reward of -3.4e38 once.
        poisoned = next(
            f"hostile-{i}"
            for i in range(200)
            if http.post("/act", json={"observation": OBS, "model": model, "session": f"hostile-{i}"}).json()[
                "policy_id"
            ]
            == champion
        )
        hostile = http.post(
            "/act",
            json={"observation": OBS, "model": model, "session": poisoned, "reward": -3.4e38, "done": True},
        )
        if declared:
            assert hostile.status_code == 422 and hostile.json()["error"]["details"][0]["field"] == "reward"
        else:
            assert hostile.status_code == 200, hostile.text  # no range declared: accepted, counted

        def rolled_back() -> bool:
            state = http.get(f"/models/{model}/rollout").json()
            return state["active"] is None

        for episode in range(60):
            session = f"s{episode}"
            first = http.post("/act", json={"observation": OBS, "model": model, "session": session}).json()
            reward = per_step[first["policy_id"]]
            for step in range(60):
                body = {"observation": OBS, "model": model, "session": session, "reward": reward, "done": step == 59}
                assert http.post("/act", json=body).status_code == 200
            if episode >= 20 and episode % 5 == 0 and rolled_back():
                break
        wait_for(rolled_back, "the guard to roll the challenger back", deadline=30, logs=processes.logs)
        (ended, *_) = http.get(f"/models/{model}/rollout").json()["history"]
    assert ended["id"] == rollout_id and ended["status"] == "rolled_back", ended
    assert ended["guard_statistic"] == ("mean" if declared else "trimmed_mean_10")
    live = {row["role"]: row for row in ended["live"]}
    if not declared:  # the plain mean is poisoned; the trimmed mean the guard used is not
        assert live["champion"]["mean_return"] < -1e36
        assert live["champion"]["trimmed_mean_return"] == pytest.approx(-30.0, rel=0.05)
    assert live["challenger"]["trimmed_mean_return"] == pytest.approx(-930.0, rel=0.05)
    assert "guard: challenger" in ended["end_reason"], ended["end_reason"]
