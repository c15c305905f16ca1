"""`python -m trainer` run as a user runs it (a subprocess), and the small training its tests share."""

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import run_process

FAST_TRAIN = [
    "--episodes", "2", "--max-episode-steps", "50", "--hidden-size", "16", "--batch-size", "32",
    "--learning-starts", "40", "--random-steps", "40", "--eval-every", "1", "--eval-episodes", "2",
]  # fmt: skip


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From another directory: `python -m trainer` must work wherever the project is installed.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return run_process([sys.executable, "-m", "trainer", *args], cwd=cwd, env=env, timeout=180)
