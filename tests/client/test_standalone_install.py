"""The client installs alone: `pip install ./ddpg_client` into an empty virtual environment brings httpx and numpy,
and nothing of the service (its web framework, database, compiler, plotting, environments or torch)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Distributions only the service needs: none may come with the client.
SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "numba", "llvmlite", "matplotlib"}
SERVER_ONLY |= {"gymnasium", "pygame", "onnx", "torch", "pydantic", "ddpg-policy-service"}
# Wheel builds and the index look-ups, not a timing assertion.
INSTALL_TIMEOUT_SECONDS = 600


def _run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _installed(python: Path, cwd: Path) -> set[str]:
    """The environment's distributions, by normalized name."""
    listed = json.loads(_run(python, "-m", "pip", "list", "--format=json", cwd=cwd))
    return {re.sub(r"[-_.]+", "-", entry["name"]).lower() for entry in listed}


@pytest.mark.slow
def test_the_client_installs_alone_into_an_empty_venv(tmp_path: Path) -> None:
    # A copy of the two directories the client's pyproject.toml builds from: setuptools builds in the source
    # tree, and the checkout stays untouched (two test processes could otherwise build in it at once).
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for package in ("ddpg_client", "episodes"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source / "ddpg_client", cwd=tmp_path)

    installed = _installed(python, tmp_path)
    assert {"ddpg-client", "httpx", "numpy"} <= installed
    assert not installed & SERVER_ONLY, sorted(installed & SERVER_ONLY)

    # Imported from the new environment (an empty directory as cwd, so not from a source tree).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run(python, "-c", "import ddpg_client, episodes; print(ddpg_client.__file__)", cwd=elsewhere)
    assert str(venv) in out

    # The stream extra adds websockets and msgpack (binary frames), and only those, for WS /act/stream.
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        f"{source / 'ddpg_client'}[stream]",
        cwd=tmp_path,
    )
    assert _installed(python, tmp_path) - installed == {"websockets", "msgpack"}
    _run(python, "-c", "import ddpg_client.stream", cwd=elsewhere)
