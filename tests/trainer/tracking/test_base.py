"""The tracker group's fan-out and its never-stop-training rule, and the run's artifacts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from models.errors import one_line
from models.policy import NumpyActor
from models.random_actor import random_actor_bytes
from models.weights import WeightsFormatError
from tests.trainer.tracking import records
from trainer.tracking import ARTIFACT_FILES, RunArtifacts, RunOutcome, TrackerGroup
from trainer.tracking.base import EpisodeLike, EvaluationLike, GuardedTracker


class RecordingTracker(GuardedTracker):
    """Keeps every call, to check what a group forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []

    def start(self, config: Mapping[str, Any]) -> None:
        self.calls.append(("start", dict(config)))

    def log_episode(self, episode: EpisodeLike) -> None:
        self.calls.append(("episode", episode.episode))

    def log_evaluation(self, evaluation: EvaluationLike) -> None:
        self.calls.append(("evaluation", evaluation.episode))

    def finish(self, artifacts: RunArtifacts) -> None:
        self.calls.append(("finish", sorted(artifacts.files)))

    def close(self, outcome: RunOutcome = "finished") -> None:
        self.calls.append(("close", outcome))


class ExplodingTracker(RecordingTracker):
    """A tracker that breaks the rule and raises (as a buggy third-party one might)."""

    def log_episode(self, episode: EpisodeLike) -> None:
        if episode.episode == 2:
            raise RuntimeError("backend exploded\nwith a traceback-like second line")
        super().log_episode(episode)


def test_group_forwards_the_callbacks_arguments_in_order() -> None:
    tracker = RecordingTracker()
    group = TrackerGroup([tracker])
    evaluations = {e.episode: e for e in records.evaluations()}

    group.start({"seed": 1})
    for episode in records.episodes():
        group.log_progress(episode, evaluations.get(episode.episode))
    group.finish(RunArtifacts({"config.json": b"{}"}))
    group.close("failed")

    assert tracker.calls == [
        ("start", {"seed": 1}),
        ("episode", 0),
        ("episode", 1),
        ("evaluation", 1),
        ("episode", 2),
        ("episode", 3),
        ("episode", 4),
        ("evaluation", 4),
        ("finish", ["config.json"]),
        ("close", "failed"),
    ]


def test_a_raising_tracker_is_dropped_and_the_others_continue() -> None:
    exploding, healthy = ExplodingTracker(), RecordingTracker()
    group = TrackerGroup([exploding, healthy])

    records.feed(group)
    group.close()

    assert group.trackers == [healthy]
    assert group.dropped == {"ExplodingTracker": "log_episode raised RuntimeError: backend exploded"}
    assert [c for c in exploding.calls if c[0] == "episode"] == [("episode", 0), ("episode", 1)]
    assert [c for c in healthy.calls if c[0] == "episode"] == [("episode", i) for i in range(5)]
    assert ("close", "finished") not in exploding.calls


def test_guarded_tracker_keeps_the_first_reason_and_stops_calling() -> None:
    tracker = GuardedTracker()
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    assert tracker.guarded("first", fail) is None
    assert tracker.guarded("second", fail) is None
    assert tracker.guarded("third", lambda: 42) is None
    assert calls == [1]
    assert not tracker.enabled
    assert tracker.disabled_reason == "first failed: ConnectionError: refused"
    assert GuardedTracker().guarded("ok", lambda: 42) == 42


def test_one_line_bounds_long_messages() -> None:
    assert one_line(ValueError("")) == "ValueError"
    assert one_line(ValueError("a\nb")) == "ValueError: a"
    assert len(one_line(ValueError("x" * 1000))) < 320


def test_artifacts_from_an_output_directory_add_the_onnx_model(tmp_path: Path) -> None:
    actor = random_actor_bytes(3)
    (tmp_path / "actor.safetensors").write_bytes(actor)
    (tmp_path / "config.json").write_text("{}\n")
    (tmp_path / "rewards.csv").write_text("not an artifact\n")

    artifacts = RunArtifacts.from_directory(tmp_path)

    assert sorted(artifacts.files) == ["actor.onnx", "actor.safetensors", "config.json"]
    assert artifacts.actor_bytes == actor
    observations = np.zeros((2, 3), dtype=np.float32)
    session = ort.InferenceSession(artifacts.files["actor.onnx"], providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(["action"], {"observation": observations})[0],
        NumpyActor.from_bytes(actor).act(observations),
        atol=1e-5,
    )


def test_artifacts_from_a_directory_with_a_corrupt_actor_raise(tmp_path: Path) -> None:
    (tmp_path / "actor.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsFormatError):
        RunArtifacts.from_directory(tmp_path)


def test_artifacts_from_a_training_result_are_the_cli_files(tmp_path: Path) -> None:
    actor = random_actor_bytes(4)
    config = {"seed": 4, "episodes": 5}

    artifacts = RunArtifacts.from_training(actor, config, records.episodes(), records.evaluations(), title="t")

    assert sorted(artifacts.files) == sorted(ARTIFACT_FILES)
    assert artifacts.files["actor.safetensors"] == actor
    assert json.loads(artifacts.files["config.json"]) == config
    assert artifacts.files["rewards.png"].startswith(b"\x89PNG\r\n\x1a\n")
    written = artifacts.write_to(tmp_path)
    assert sorted(p.name for p in written) == sorted(ARTIFACT_FILES)
    assert (tmp_path / "actor.onnx").read_bytes() == artifacts.files["actor.onnx"]


@pytest.mark.parametrize("name", ["", ".", "..", "dir/actor.onnx", "..\\evil"])
def test_artifact_names_are_plain_file_names(name: str) -> None:
    with pytest.raises(ValueError, match="plain file names"):
        RunArtifacts({name: b""})
