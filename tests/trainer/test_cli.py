"""`python -m trainer` as a user runs it: real subprocesses for train and evaluate, in-process for the rest."""

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from models.weights import load_actor_file
from tests.trainer.cli_run import FAST_TRAIN
from tests.trainer.cli_run import run_cli as _run
from trainer import cli


def test_train_writes_all_files(trained: Path) -> None:
    assert sorted(p.name for p in trained.iterdir()) == [
        "actor.onnx", "actor.safetensors", "config.json", "evaluations.csv", "rewards.csv", "rewards.png",
    ]  # fmt: skip


def test_actor_file_is_a_valid_ddpg_actor(trained: Path) -> None:
    weights = load_actor_file(trained / "actor.safetensors")
    assert weights.hidden_size == 16 and weights.seed == 3 and weights.env_id == "Pendulum-v1"
    assert weights.eval_mean_return is not None


def test_csv_columns_and_rows(trained: Path) -> None:
    with (trained / "rewards.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["episode", "episode_return", "avg_return_10", "env_steps", "wall_time"]
    assert [int(r["episode"]) for r in rows] == [0, 1] and [int(r["env_steps"]) for r in rows] == [50, 100]
    with (trained / "evaluations.csv").open() as handle:
        evals = list(csv.DictReader(handle))
    assert list(evals[0]) == ["episode", "env_steps", "mean_return", "std_return", "wall_time"]
    assert [int(r["episode"]) for r in evals] == [0, 1]


def test_png_is_a_png(trained: Path) -> None:
    data = (trained / "rewards.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_config_json_is_the_full_config_with_overrides(trained: Path) -> None:
    config = json.loads((trained / "config.json").read_text())
    assert config["seed"] == 3 and config["gamma"] == 0.95 and config["hidden_size"] == 16
    assert config["actor_lr"] == 1e-3  # from the default preset
    assert set(config) == set(cli.TrainingConfig.model_fields)
    assert load_actor_file(trained / "actor.safetensors").config == config


def test_evaluate_subcommand_uses_the_file(trained: Path) -> None:
    proc = _run("evaluate", str(trained / "actor.safetensors"), "--episodes", "2", "--max-episode-steps", "50",
                cwd=trained)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["episodes"] == 2 and len(report["returns"]) == 2
    assert report["mean_return"] == pytest.approx(sum(report["returns"]) / 2)


def test_evaluate_rejects_a_file_that_is_not_an_actor(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    proc = _run("evaluate", str(junk), cwd=tmp_path)
    assert proc.returncode == 1 and "not a safetensors file" in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "--out"),
        (["train", "--out", "x", "--gamma", "2"], "gamma"),
        (["train", "--out", "x", "--episodes", "ten"], "--episodes"),
        (["train", "--out", "x", "--noise", "pink"], "--noise"),
        (["train", "--out", "x", "--preset", "fast"], "--preset"),
        (["train", "--out", "x", "--no-such-flag", "1"], "no-such-flag"),
        (["evaluate", "a.safetensors", "--episodes", "0"], "--episodes"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        cli.main(argv)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_arguments_exit_non_zero_from_the_shell(tmp_path: Path) -> None:
    proc = _run("train", "--out", str(tmp_path / "o"), "--tau", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "tau" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_every_config_field_is_a_flag() -> None:
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for name in cli.TrainingConfig.model_fields:
        assert "--" + name.replace("_", "-") in help_text


def test_worker_subcommand_dispatches_the_rest_of_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[list[str]] = []
    fake = types.ModuleType("trainer.worker")
    fake.main = lambda argv: received.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trainer.worker", fake)
    assert cli.main(["worker", "--once", "--database-url", "sqlite://"]) == 7
    assert received == [["--once", "--database-url", "sqlite://"]]


def test_gif_flag_writes_the_rollout_next_to_the_weights(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "gif-run"
    assert cli.main(["train", "--out", str(out), "--seed", "2", "--gif", *FAST_TRAIN]) == 0
    gif = out / cli.GIF_FILE
    assert gif.read_bytes()[:6] == b"GIF89a"
    with Image.open(gif) as image:
        assert image.n_frames > 10  # an animation of the episode, not a still
