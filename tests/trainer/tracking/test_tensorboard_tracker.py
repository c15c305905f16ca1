"""TensorBoardTracker's event files, read back the way TensorBoard reads them (its EventAccumulator)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.trainer.tracking import records
from trainer.tracking import (
    EPISODE_AVG_RETURN_10,
    EPISODE_RETURN,
    EVAL_MEAN_RETURN,
    EVAL_STD_RETURN,
    RunArtifacts,
)
from trainer.tracking.tensorboard_tracker import CONFIG_TAG, OUTCOME_TAG, TensorBoardTracker

if TYPE_CHECKING:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_events(log_dir: Path) -> EventAccumulator:
    # Imported here, not while every pytest runner collects this module.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    events = accumulator.Scalars(tag)
    return [event.step for event in events], [event.value for event in events]


def text(accumulator: EventAccumulator, tag: str) -> str:
    (event,) = accumulator.Tensors(f"{tag}/text_summary")
    value: bytes = event.tensor_proto.string_val[0]
    return value.decode("utf-8")


def test_scalars_by_env_step_and_config_read_back(tmp_path: Path) -> None:
    log_dir = tmp_path / "tb" / "run-1"
    tracker = TensorBoardTracker(log_dir)

    tracker.start({"seed": 3, "hidden_size": 64, "max_episode_steps": None})
    records.feed(tracker)
    tracker.finish(RunArtifacts())
    tracker.close()

    assert tracker.disabled_reason is None
    events = read_events(log_dir)
    episodes, evaluations = records.episodes(), records.evaluations()
    for tag, expected in [
        (EPISODE_RETURN, [(e.env_steps, e.episode_return) for e in episodes]),
        (EPISODE_AVG_RETURN_10, [(e.env_steps, e.avg_return_10) for e in episodes]),
        (EVAL_MEAN_RETURN, [(e.env_steps, e.mean_return) for e in evaluations]),
        (EVAL_STD_RETURN, [(e.env_steps, e.std_return) for e in evaluations]),
    ]:
        steps, values = scalars(events, tag)
        assert steps == [step for step, _ in expected], tag
        # Event files hold float32: compare at float32 precision.
        assert values == pytest.approx([value for _, value in expected], rel=1e-6), tag
    assert scalars(events, EPISODE_RETURN)[0] == [200, 400, 600, 800, 1000]
    config_text = text(events, CONFIG_TAG)
    assert '"hidden_size": 64' in config_text and '"max_episode_steps": null' in config_text
    assert text(events, OUTCOME_TAG) == "finished"


def test_a_live_view_sees_events_before_close(tmp_path: Path) -> None:
    """`tensorboard --logdir` charts a job while it trains: events reach the disk within flush_secs."""
    tracker = TensorBoardTracker(tmp_path, flush_secs=1)
    try:
        tracker.start({})
        records.feed(tracker)
        deadline = time.monotonic() + 10
        seen = 0
        while time.monotonic() < deadline:
            accumulator = read_events(tmp_path)
            if EPISODE_RETURN in accumulator.Tags()["scalars"]:
                seen = len(accumulator.Scalars(EPISODE_RETURN))
                if seen == len(records.EPISODE_RETURNS):
                    break
            time.sleep(0.1)
        assert seen == len(records.EPISODE_RETURNS)
    finally:
        tracker.close()


def test_close_is_idempotent_and_later_calls_are_no_ops(tmp_path: Path) -> None:
    tracker = TensorBoardTracker(tmp_path)
    tracker.start({})
    tracker.close("cancelled")
    tracker.close()
    records.feed(tracker)  # after close: ignored, not an error
    assert text(read_events(tmp_path), OUTCOME_TAG) == "cancelled"
    assert EPISODE_RETURN not in read_events(tmp_path).Tags()["scalars"]


def test_a_log_dir_that_cannot_be_created_fails_up_front(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError):
        TensorBoardTracker(tmp_path / "a-file" / "run")


def test_without_tensorboardx_installed_the_constructor_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"ddpg-policy-service\[tensorboard\]"):
        TensorBoardTracker(tmp_path)


def test_a_write_failure_disables_without_raising(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = TensorBoardTracker(tmp_path)
    tracker.start({})

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracker._writer, "add_scalar", disk_full)
    records.feed(tracker)
    tracker.close()

    assert tracker.disabled_reason == "writing episode 0 failed: OSError: [Errno 28] No space left on device"
