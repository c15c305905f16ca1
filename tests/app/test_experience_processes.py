"""Recording with real processes: two API processes on one database, sessions spread over both (the stream and HTTP
keep-alive), exploration on half of them. Every step a driver took is recorded exactly once with its exact values,
episode boundaries and terminated / truncated; an API process SIGKILLed mid-recording loses at most what it had not
flushed yet (a suffix of its steps), and leaves every stored chunk readable."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from app.serving.served_models import session_bucket
from ddpg_client.stream import ActStream
from models.experience_chunks import ExperienceColumns, decode_chunk
from models.registry_vocabulary import SPLIT_BUCKETS
from store.db import create_db_engine, make_session_factory
from store.experience import set_settings
from store.policies import register_policy
from store.registry import create_model, get_model, set_champion
from store.tables.serving_records import ExperienceChunk
from tests.app.factories import free_port, make_policy_bytes
from tests.app.servers import running, server_env, uvicorn_command, wait_until_ready

OBS_DIM, ACT_DIM = 4, 2
SPACES = {
    "obs_dim": OBS_DIM,
    "act_dim": ACT_DIM,
    "observation_low": [None] * OBS_DIM,
    "observation_high": [None] * OBS_DIM,
    "action_low": [-2.0, -2.0],
    "action_high": [2.0, 2.0],
    "reward_range": None,
}
FLUSH_SECONDS = "0.2"
# Bounds on waiting (never timing assertions): how long a flush may take to show up on a loaded machine.
WAIT_SECONDS = 60.0


@dataclass
class Step:
    """One request a driver sent and the answer it got."""

    observation: tuple[float, ...]
    reward: float | None
    done: bool
    truncated: bool
    action: tuple[float, ...] = ()


@dataclass
class DrivenSession:
    """A driver's session: its episodes, each a list of requests (the last one ends it)."""

    label: str
    session: str | None  # None for a stream (the server names it)
    episodes: list[list[Step]] = field(default_factory=list)


def f32(value: float) -> float:
    return float(np.float32(value))


def _steps(rng: np.random.Generator, length: int, ending: str) -> list[Step]:
    steps = []
    for index in range(length + 1):
        last = index == length
        steps.append(
            Step(
                observation=tuple(f32(v) for v in rng.normal(size=OBS_DIM)),
                reward=None if index == 0 else f32(rng.normal()),
                done=last and ending == "done",
                truncated=last and ending == "truncated",
            )
        )
    return steps


def drive_http(base_url: str, driven: DrivenSession, rng: np.random.Generator, episodes: int) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:  # one keep-alive connection: one process
        for episode in range(episodes):
            steps = _steps(rng, int(rng.integers(2, 9)), "done" if episode % 2 == 0 else "truncated")
            for step in steps:
                body: dict[str, Any] = {
                    "model": "arm",
                    "session": driven.session,
                    "observation": list(step.observation),
                }
                if step.reward is not None:
                    body["reward"] = step.reward
                if step.done:
                    body["done"] = True
                if step.truncated:
                    body["truncated"] = True
                answer = client.post("/act", json=body)
                assert answer.status_code == 200, answer.text
                step.action = tuple(f32(v) for v in answer.json()["action"])
            driven.episodes.append(steps)


def drive_stream(base_url: str, driven: DrivenSession, rng: np.random.Generator, episodes: int) -> None:
    with ActStream(base_url, model="arm") as stream:
        for episode in range(episodes):
            steps = _steps(rng, int(rng.integers(2, 9)), "truncated" if episode % 2 == 0 else "done")
            for step in steps:
                result = stream.act(
                    list(step.observation), reward=step.reward, done=step.done, truncated=step.truncated
                )
                step.action = tuple(f32(v) for v in result.action)
            driven.episodes.append(steps)


@dataclass(frozen=True)
class Expected:
    label: str
    episode: int
    step: int
    observation: tuple[float, ...]
    action: tuple[float, ...]
    reward: float
    next_observation: tuple[float, ...]
    terminated: bool
    truncated: bool


def expected_transitions(driven: DrivenSession) -> list[Expected]:
    """What the recording must hold: one transition per request but the last of each episode."""
    out = []
    for number, steps in enumerate(driven.episodes):
        for index in range(len(steps) - 1):
            this, after = steps[index], steps[index + 1]
            assert after.reward is not None
            out.append(
                Expected(
                    driven.label,
                    number,
                    index,
                    this.observation,
                    this.action,
                    after.reward,
                    after.observation,
                    after.done,
                    after.truncated,
                )
            )
    return out


def read_recorded(database_url: str) -> ExperienceColumns:
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            blobs = session.scalars(select(ExperienceChunk.data).order_by(ExperienceChunk.id)).all()
    finally:
        engine.dispose()
    parts = [decode_chunk(blob) for blob in blobs if blob is not None]  # every chunk must decode
    assert parts, "nothing recorded"
    return ExperienceColumns.concat(parts)


def recorded_count(base_url: str) -> int:
    return int(httpx.get(f"{base_url}/models/arm/experience", timeout=30).json()["transitions"])


def wait_for_count(base_url: str, count: int) -> None:
    stop = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < stop:
        if recorded_count(base_url) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{recorded_count(base_url)} transitions recorded, waited for {count}")


def by_observation(recorded: ExperienceColumns) -> dict[tuple[float, ...], list[int]]:
    rows: dict[tuple[float, ...], list[int]] = {}
    for row in range(len(recorded)):
        rows.setdefault(tuple(recorded.observation[row].tolist()), []).append(row)
    return rows


def check_row(recorded: ExperienceColumns, row: int, expected: Expected, policy_id: int) -> None:
    assert tuple(recorded.action[row].tolist()) == expected.action
    assert float(recorded.reward[row]) == expected.reward
    assert tuple(recorded.next_observation[row].tolist()) == expected.next_observation
    assert bool(recorded.terminated[row]) == expected.terminated
    assert bool(recorded.truncated[row]) == expected.truncated
    assert int(recorded.step[row]) == expected.step
    assert int(recorded.policy_id[row]) == policy_id


@contextlib.contextmanager
def api_process(tmp_path: Path, name: str, database_url: str) -> Iterator[tuple[str, Any]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / f"{name}.log"
    env = server_env(
        tmp_path / name,
        DATABASE_URL=database_url,
        EMBEDDED_WORKER="false",
        BOOTSTRAP_JOB="false",
        POLICY_REFRESH_SECONDS="0.2",
        EXPERIENCE_FLUSH_SECONDS=FLUSH_SECONDS,
    )
    with running(uvicorn_command(port, workers=1), env, log_path) as process:
        # /readyz wants the default model's policy; this database serves only `arm`.
        wait_until_ready(base_url, process, log_path, path="/healthz")
        wait_until_ready(base_url, process, log_path, path="/models/arm")
        yield base_url, process


def setup_model(database_url: str, explore: dict[str, Any] | None) -> tuple[int, str | None]:
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            model = create_model(session, name="arm", env_id=None, spaces=SPACES)
            weights = make_policy_bytes(4, obs_dim=OBS_DIM, act_dim=ACT_DIM)
            policy = register_policy(session, weights=weights, promote="never", model_id=model.id)
            set_champion(session, model.id, policy.id)
            salt = None if explore is None else "test-salt"
            settings = {"record": True, "max_transitions": 1_000_000, "explore": None}
            if explore is not None:
                settings["explore"] = {**explore, "salt": salt}
            set_settings(session, model, settings)
            session.commit()
            assert get_model(session, "arm") is not None
            return policy.id, salt
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_processes_record_every_step_exactly_once(tmp_path: Path, database_url: str) -> None:
    explore = {"noise": "gaussian", "sigma": 0.2, "percent": 50}
    policy_id, salt = setup_model(database_url, explore)
    assert salt is not None
    with api_process(tmp_path, "a", database_url) as (url_a, _), api_process(tmp_path, "b", database_url) as (url_b, _):
        driven: list[DrivenSession] = []
        threads = []
        for index in range(8):
            url = url_a if index % 2 == 0 else url_b
            stream = index % 4 >= 2
            session = DrivenSession(f"d{index}", None if stream else f"http-{index}")
            driven.append(session)
            rng = np.random.default_rng(100 + index)
            target = drive_stream if stream else drive_http
            threads.append(threading.Thread(target=target, args=(url, session, rng, 3)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = [t for d in driven for t in expected_transitions(d)]
        wait_for_count(url_a, len(expected))
        assert recorded_count(url_b) == len(expected)
        stats = httpx.get(f"{url_a}/models/arm/experience").json()
        assert stats["dropped"] == 0
        assert stats["episodes"] == sum(len(d.episodes) for d in driven)
    recorded = read_recorded(database_url)
    assert len(recorded) == len(expected)
    rows = by_observation(recorded)
    for transition in expected:
        found = rows[transition.observation]
        assert len(found) == 1, f"{transition} recorded {len(found)} times"
        check_row(recorded, found[0], transition, policy_id)
    # Episode boundaries: each driven episode is one (session, episode) group of the recording, steps 0..n-1.
    for d in driven:
        sessions = set()
        for number, steps in enumerate(d.episodes):
            group = {
                (recorded.session[rows[s.observation][0]], int(recorded.episode[rows[s.observation][0]]))
                for s in steps[:-1]
            }
            assert len(group) == 1, (d.label, number)
            sessions.add(next(iter(group))[0])
        assert len(sessions) == 1  # one session id per driven session
        if d.session is not None:
            assert sessions == {d.session}
    # Exploration: exactly the sessions on the exploring side of the keyed hash carry noise, scale 0.2.
    threshold = round(50 * SPLIT_BUCKETS / 100)
    for row in range(len(recorded)):
        explores = session_bucket(salt.encode(), str(recorded.session[row])) < threshold
        assert float(recorded.noise_scale[row]) == (f32(0.2) if explores else 0.0)
        if not explores:
            assert not recorded.noise[row].any()


def hopping_session(first_url: str, second_url: str, policy_id: int) -> list[Expected]:
    """One episode of 6 steps: 3 requests to the first process, the rest (pinned to the policy) to the second."""
    driven = DrivenSession("hop", "hop-1")
    steps = _steps(np.random.default_rng(3), 5, "done")
    for index, step in enumerate(steps):
        body: dict[str, Any] = {"model": "arm", "session": driven.session, "observation": list(step.observation)}
        if step.reward is not None:
            body["reward"] = step.reward
        if step.done:
            body["done"] = True
        if index >= 3:
            body["policy_id"] = policy_id
        answer = httpx.post(f"{first_url if index < 3 else second_url}/act", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        step.action = tuple(f32(v) for v in answer.json()["action"])
    driven.episodes.append(steps)
    return expected_transitions(driven)


@pytest.mark.slow
def test_a_killed_process_loses_at_most_its_unflushed_steps(tmp_path: Path, database_url: str) -> None:
    policy_id, _ = setup_model(database_url, None)
    with api_process(tmp_path, "survivor", database_url) as (url_a, _):
        with api_process(tmp_path, "victim", database_url) as (url_b, victim):
            before = DrivenSession("before", "kill-1")
            drive_http(url_b, before, np.random.default_rng(1), 4)
            flushed = expected_transitions(before)
            # A session whose requests move to the other process mid-episode (no affinity): the step the first
            # process held is lost; every other step is recorded once, the rest under a new episode id.
            hop = hopping_session(url_b, url_a, policy_id)
            wait_for_count(url_a, len(flushed) + len(hop) - 1)
            # More steps, then SIGKILL at once: these may or may not have been flushed.
            after = DrivenSession("after", "kill-2")
            drive_http(url_b, after, np.random.default_rng(2), 6)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
        time.sleep(float(FLUSH_SECONDS) * 2)  # nothing more can arrive from the dead process; let readers settle
        recorded = read_recorded(database_url)  # every stored chunk decodes: nothing corrupt
        rows = by_observation(recorded)
        for transition in flushed:
            assert len(rows[transition.observation]) == 1
            check_row(recorded, rows[transition.observation][0], transition, policy_id)
        unflushed = expected_transitions(after)
        present = [len(rows.get(t.observation, [])) for t in unflushed]
        assert set(present) <= {0, 1}  # never twice
        # A flush is one transaction of everything appended before it: what survived is a prefix of the steps.
        kept = sum(present)
        assert present == [1] * kept + [0] * (len(unflushed) - kept)
        for transition in unflushed[:kept]:
            check_row(recorded, rows[transition.observation][0], transition, policy_id)
        assert len(recorded) == len(flushed) + kept + len(hop) - 1
        lost = hop[2]  # the step held by the first process when its session's next request went elsewhere
        assert lost.observation not in rows
        for transition in hop[:2]:
            check_row(recorded, rows[transition.observation][0], transition, policy_id)
        for index, transition in enumerate(hop[3:]):  # recorded by the second process, numbered from 0 there
            check_row(recorded, rows[transition.observation][0], replace(transition, step=index), policy_id)
        # The survivor still serves and records.
        assert httpx.get(f"{url_a}/models/arm/experience").status_code == 200
