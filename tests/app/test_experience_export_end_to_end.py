"""Every served step is data, end to end: a real `python -m app` records the sessions a driver runs over HTTP on
Pendulum (episodes ended by `done` and by `truncated`, one left open), the chunk bytes going to a real S3-compatible
server (moto_server); then `python -m ddpg_client experience` downloads the Minari export and minari.load_dataset
holds exactly the episodes that ended, each as the driver saw it, and the Parquet export reads with pyarrow. The
route is fuzzed with schemathesis on the running server: no 5xx, every answer as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import hypothesis
import minari
import numpy as np
import pyarrow.parquet as pq
import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.app.factories import free_port, make_policy_bytes
from tests.app.servers import REPO, running, server_env, wait_until_ready
from tests.app.test_end_to_end import wait_for
from tests.s3_server import running_s3_server

pytestmark = pytest.mark.slow

MODEL = "pendulum"
DATASET_ID = f"ddpg-service/{MODEL}/recorded-v0"


@dataclass
class DrivenEpisode:
    """What the driver sent and got for one episode."""

    session: str
    ending: str  # "done", "truncated" or "open"
    observations: list[np.ndarray] = field(default_factory=list)  # n + 1 when ended
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


def _drive(client: httpx.Client, session: str, seed: int, steps: int, ending: str) -> DrivenEpisode:
    """One Pendulum episode over POST /act with `session`: `steps` transitions, then the ending request (none for an
    episode left open: its last step waits for a next request that never comes)."""
    env = gym.make("Pendulum-v1")
    observation, _ = env.reset(seed=seed)
    driven = DrivenEpisode(session, ending)
    reward: float | None = None
    for _ in range(steps):
        body: dict[str, Any] = {"session": session, "observation": observation.tolist()}
        if reward is not None:
            body["reward"] = reward
        answer = client.post("/act", json=body)
        assert answer.status_code == 200, answer.text
        action = np.asarray(answer.json()["action"], np.float32)
        driven.observations.append(observation.astype(np.float32))
        driven.actions.append(action)
        observation, step_reward, _, _, _ = env.step(action)
        reward = float(step_reward)
        driven.rewards.append(reward)
    if ending != "open":
        final = {"session": session, "observation": observation.tolist(), "reward": reward, ending: True}
        assert client.post("/act", json=final).status_code == 200
        driven.observations.append(observation.astype(np.float32))
    env.close()
    return driven


@dataclass
class Recorded:
    base_url: str
    episodes: list[DrivenEpisode]
    out: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Recorded]:
    tmp_path = tmp_path_factory.mktemp("experience-e2e")
    policy = tmp_path / "actor.safetensors"
    policy.write_bytes(make_policy_bytes(5))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app.log"
    with running_s3_server() as s3:
        s3.create_bucket("experience")
        for name, value in s3.env.items():
            monkeypatch_module.setenv(name, value)
        env = server_env(
            tmp_path / "data",
            PORT=str(port),
            POLICY_FILE=str(policy),
            EMBEDDED_WORKER="false",
            BOOTSTRAP_JOB="false",
            EXPERIENCE_URL="s3://experience/live",
            EXPERIENCE_FLUSH_SECONDS="0.2",
            **s3.env,
        )
        with (
            running([sys.executable, "-m", "app"], env, log_path) as process,
            httpx.Client(base_url=base_url, timeout=30) as client,
        ):
            wait_until_ready(base_url, process, log_path)
            put = client.put(f"/models/{MODEL}/experience", json={"record": True})
            assert put.status_code == 200, put.text
            episodes = [
                _drive(client, "driver-a", seed=1, steps=12, ending="truncated"),
                _drive(client, "driver-a", seed=2, steps=7, ending="done"),  # the same session's next episode
                _drive(client, "driver-b", seed=3, steps=9, ending="done"),
                _drive(client, "driver-c", seed=4, steps=5, ending="open"),
                _drive(client, "driver-d", seed=5, steps=1, ending="truncated"),
            ]
            # The open episode's last step waits for its next request: it is not a transition yet.
            expected = sum(len(e.actions) for e in episodes) - 1

            def flushed() -> bool:
                stats = client.get(f"/models/{MODEL}/experience").json()
                return bool(stats["transitions"] == expected)

            wait_for("the recorded transitions in the store", flushed, deadline=30, log_path=log_path)
            # The bytes are on the S3 server, one object per chunk row.
            import boto3

            listing = boto3.client("s3", endpoint_url=s3.endpoint_url).list_objects_v2(Bucket="experience")
            objects = [item["Key"] for item in listing.get("Contents", [])]
            chunks = client.get(f"/models/{MODEL}/experience").json()["chunks"]
            assert chunks >= 1 and len(objects) == chunks and all(key.startswith("live/") for key in objects)
            yield Recorded(base_url, episodes, tmp_path / "downloads", env)


def _client_command(recorded: Recorded, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddpg_client", "experience", MODEL, "--url", recorded.base_url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_the_minari_export_holds_exactly_the_episodes_that_ended(recorded: Recorded, monkeypatch) -> None:
    out = recorded.out / "minari"
    result = _client_command(recorded, "--format", "minari", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert DATASET_ID in result.stdout
    assert "100%" in result.stderr  # tqdm's bar reached the end

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    dataset = minari.load_dataset(DATASET_ID)
    ended = [e for e in recorded.episodes if e.ending != "open"]
    assert dataset.total_episodes == len(ended)
    assert dataset.total_steps == sum(len(e.actions) for e in ended)
    assert dataset.observation_space.shape == (3,) and dataset.action_space.shape == (1,)
    assert dataset.recover_environment().spec.id == "Pendulum-v1"  # the model's environment, from its env_spec

    by_start = {(e.session, e.observations[0].tobytes()): e for e in ended}
    metadata = dataset.storage.get_episode_metadata(range(dataset.total_episodes))
    seen = set()
    for episode, meta in zip(dataset.iterate_episodes(), metadata, strict=True):
        key = (meta["session"], np.asarray(episode.observations[0], np.float32).tobytes())
        driven = by_start[key]
        seen.add(key)
        assert np.array_equal(episode.observations, np.stack(driven.observations))  # incl. the final observation
        assert np.array_equal(episode.actions, np.stack(driven.actions))
        assert np.array_equal(episode.rewards, np.asarray(driven.rewards, np.float32))
        n = len(driven.actions)
        assert episode.terminations.tolist() == [False] * (n - 1) + [driven.ending == "done"]
        assert episode.truncations.tolist() == [False] * (n - 1) + [driven.ending == "truncated"]
    assert len(seen) == len(ended)


def test_the_parquet_export_holds_every_recorded_transition(recorded: Recorded) -> None:
    out = recorded.out / "parquet"
    result = _client_command(recorded, "--format", "parquet", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out / f"{MODEL}.parquet")
    assert table.num_rows == sum(len(e.actions) for e in recorded.episodes) - 1
    by_session: dict[str, int] = {}
    for session in table.column("session").to_pylist():
        by_session[session] = by_session.get(session, 0) + 1
    assert by_session == {"driver-a": 19, "driver-b": 9, "driver-c": 4, "driver-d": 1}
    assert sum(table.column("terminated").to_pylist()) == 2 and sum(table.column("truncated").to_pylist()) == 2


def test_the_client_command_reports_bad_input(recorded: Recorded, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ddpg_client", "experience", "no-such-model", "--url", recorded.base_url,
         "--out", str(tmp_path), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no model named 'no-such-model'" in result.stderr
    assert not list(tmp_path.iterdir()), "no partial download left behind"


def test_the_dataset_route_never_answers_5xx_or_off_its_document(recorded: Recorded) -> None:
    schema = schemathesis.openapi.from_url(f"{recorded.base_url}/openapi.json")
    operation = schema["/models/{name}/experience/dataset"]["GET"]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=recorded.base_url)

        check()
    # The generated names are almost never the recorded model: ask for it explicitly too.
    for export_format in ("minari", "parquet"):
        case = operation.Case(path_parameters={"name": MODEL}, query={"format": export_format})
        case.call_and_validate(base_url=recorded.base_url)
