"""The client's control-loop helpers against the real service: `client.stream()` over WS /act/stream (sync and
async), and `act()` with a model, a session and rewards over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ddpg_client import AsyncPolicyClient, NotFoundError, PolicyClient, ValidationError
from ddpg_client.stream import stream_url
from models.random_actor import random_actor_bytes
from tests.client.test_client import API_KEY, Server, run_server

OBS = [0.3, -0.2, 0.5]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("stream"), policy=random_actor_bytes(seed=11)) as running:
        yield running


def test_a_stream_is_one_session_answered_like_act(server: Server) -> None:
    assert server.actor is not None
    with PolicyClient(server.url, api_key=API_KEY) as client, client.stream() as stream:
        first = stream.act(OBS)
        np.testing.assert_allclose(first.action, server.actor.act(np.array(OBS, dtype=np.float32)), rtol=1e-6)
        for _ in range(5):
            assert stream.act(np.array(OBS), reward=-1.5).policy_id == first.policy_id
        assert stream.act(OBS, reward=-1.5, done=True).policy_id == first.policy_id
        with pytest.raises(ValidationError) as caught:
            stream.act([0.0, 0.0])  # the stream goes on after an error
        assert caught.value.details[0]["field"] == "observation"
        assert stream.act(OBS).policy_id == first.policy_id
    metrics = PolicyClient(server.url)._http.get("/metrics").text
    assert f'act_episodes_finished_total{{model="pendulum",policy_id="{first.policy_id}"}} 1.0' in metrics


def test_a_stream_for_an_unknown_model_is_not_found(server: Server) -> None:
    with PolicyClient(server.url) as client, client.stream(model="boat") as stream, pytest.raises(NotFoundError):
        stream.act(OBS)


def test_the_async_stream(server: Server) -> None:
    async def loop() -> list[int]:
        async with AsyncPolicyClient(server.url) as client, client.stream(model="pendulum") as stream:
            ids = [(await stream.act(OBS, reward=None if step == 0 else -1.0)).policy_id for step in range(3)]
            ids.append((await stream.act(OBS, reward=-1.0, done=True)).policy_id)
            return ids

    ids = asyncio.run(loop())
    assert len(set(ids)) == 1


def test_act_with_model_session_and_rewards_over_http(server: Server) -> None:
    with PolicyClient(server.url) as client:
        first = client.act(OBS, model="pendulum", session="episode-1")
        assert (
            client.act(OBS, model="pendulum", session="episode-1", reward=-2.0, done=True).policy_id == first.policy_id
        )
        with pytest.raises(ValidationError) as caught:
            client.act(OBS, reward=-2.0)  # a reward needs a session
        assert caught.value.details[0]["field"] == "reward"


def test_truncated_ends_an_episode_over_the_stream_and_http(server: Server) -> None:
    with PolicyClient(server.url) as client, client.stream() as stream:
        first = stream.act(OBS)
        assert stream.act(OBS, reward=-1.0, truncated=True).policy_id == first.policy_id
        with pytest.raises(ValidationError) as caught:
            stream.act(OBS, reward=-1.0, done=True, truncated=True)
        assert caught.value.details[0]["field"] == "truncated"
        ended = client.act(OBS, model="pendulum", session="cut-1", reward=-1.0, truncated=True)
        assert ended.policy_id == first.policy_id
    metrics = PolicyClient(server.url)._http.get("/metrics").text
    assert 'act_episodes_finished_total{model="pendulum"' in metrics


def test_stream_urls() -> None:
    assert stream_url("http://h:1/", None) == "ws://h:1/act/stream"
    assert stream_url("https://h", "my model") == "wss://h/act/stream?model=my%20model"
    assert stream_url("http://h", None, "msgpack") == "ws://h/act/stream?encoding=msgpack"
    assert stream_url("http://h", "car", "msgpack") == "ws://h/act/stream?model=car&encoding=msgpack"


def test_a_msgpack_stream_answers_as_a_json_stream(server: Server) -> None:
    """Binary frames: the same actions, policies and typed errors as JSON frames, step by step."""
    observations = [OBS, [1.0, 0.0, -3.0], [0.0, 0.0], [-0.5, 0.9, 2.0]]
    with (
        PolicyClient(server.url, api_key=API_KEY) as client,
        client.stream() as json_stream,
        client.stream(encoding="msgpack") as binary_stream,
    ):
        assert binary_stream.encoding == "msgpack"
        for step, observation in enumerate(observations):
            reward = None if step == 0 else -1.0
            if len(observation) != 3:
                with pytest.raises(ValidationError) as from_json:
                    json_stream.act(observation, reward=reward)
                with pytest.raises(ValidationError) as from_binary:
                    binary_stream.act(observation, reward=reward)
                assert from_binary.value.details == from_json.value.details
                assert from_binary.value.details[0]["field"] == "observation"
                continue
            assert binary_stream.act(observation, reward=reward) == json_stream.act(observation, reward=reward)
        done = binary_stream.act(np.array(OBS), reward=-1.0, done=True)
        assert done == json_stream.act(OBS, reward=-1.0, done=True)
    with (
        PolicyClient(server.url) as client,
        client.stream(model="boat", encoding="msgpack") as stream,
        pytest.raises(NotFoundError),
    ):
        stream.act(OBS)
    with pytest.raises(ValueError, match="encoding"):
        PolicyClient(server.url).stream(encoding="xml")  # type: ignore[arg-type]


def test_the_async_msgpack_stream(server: Server) -> None:
    async def loop() -> list[int]:
        async with AsyncPolicyClient(server.url) as client, client.stream(encoding="msgpack") as stream:
            ids = [(await stream.act(OBS, reward=None if step == 0 else -1.0)).policy_id for step in range(3)]
            with pytest.raises(ValidationError):
                await stream.act([0.0, 0.0], reward=-1.0)
            ids.append((await stream.act(OBS, reward=-1.0, done=True)).policy_id)
            return ids

    assert len(set(asyncio.run(loop()))) == 1


def test_the_client_package_imports_without_websockets_until_a_stream_opens(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['websockets'] = sys.modules['msgpack'] = None; import ddpg_client; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_drive_runs_a_gymnasium_id_over_the_stream_with_every_episode_end(server: Server) -> None:
    with PolicyClient(server.url, api_key=API_KEY) as client:
        episodes = client.drive("Pendulum-v1", model="pendulum", episodes=2, seed=3, max_steps=20, progress=True)
    assert [(e.episode, e.steps, e.terminated) for e in episodes] == [(0, 20, False), (1, 20, False)]
    assert all(len(e.policy_ids) == 1 and e.episode_return < 0 for e in episodes)
    metrics = PolicyClient(server.url)._http.get("/metrics").text
    assert 'act_episodes_finished_total{model="pendulum"' in metrics


def test_the_drive_command(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from ddpg_client.cli import main

    args = ["drive", "--url", server.url, "--env", "Pendulum-v1", "--model", "pendulum", "--episodes", "2"]
    assert main([*args, "--max-steps", "10", "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("episode 0 return ") and lines[0].endswith("steps 10")
    assert lines[-1].startswith("mean return ") and lines[-1].endswith("over 2 episodes")
    assert main(["drive", "--url", server.url, "--env", "nowhere.module:Env", "--model", "pendulum"]) == 1
    # A factory (`package.module:Class`) of an environment no registry knows.
    factory = "tests.reordered_pendulum:ReorderedPendulum"
    assert main(["drive", "--url", server.url, "--env", factory, "--model", "pendulum", "--episodes", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("steps 200")
