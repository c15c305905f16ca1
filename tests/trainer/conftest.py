from pathlib import Path

import pytest
import torch

import trainer.export
from tests.trainer.cli_run import FAST_TRAIN, run_cli


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """As train() does: one thread each, so parallel test runs on two cores do not oversubscribe them."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `python -m trainer train` run, read by the CLI tests and the export tests (one xdist group, so one run:
    tests/scheduling.py)."""
    out = tmp_path_factory.mktemp("run") / "out"
    proc = run_cli("train", "--out", str(out), "--seed", "3", "--gamma", "0.95", *FAST_TRAIN, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    # Not a terminal: plain log lines, no progress bar.
    assert "episode 1 return" in proc.stderr and "\r" not in proc.stderr
    return out


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports stamp this time, so two exports of the same training are byte-identical."""
    monkeypatch.setattr(trainer.export, "utc_now_iso", lambda: "2024-01-01T00:00:00+00:00")
