"""The client installs alone: its wheel, built as `pip install ./ddpg_client` builds it, installed into an empty
virtual environment brings httpx and numpy, and nothing of the service (its web framework, database, compiler,
plotting, environments or torch)."""

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


def _build_wheel(project: Path, out: Path) -> Path:
    """The project's wheel, built in an isolated environment from its pyproject.toml (`--no-deps`: its dependencies
    are the install's to resolve, from the wheel's metadata)."""
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, project, cwd=project.parent)
    [wheel] = out.glob("*.whl")
    return wheel


def _pip_install(python: Path, requirement: str, cwd: Path) -> None:
    """`requirement` and its dependencies installed into `python`'s environment. Not compiled to bytecode: the
    environment lives for one test and imports a handful of modules."""
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile", requirement, cwd=cwd)


# Run by the environment's python: imports `module`, then lists the environment's distributions as `pip list` does.
_IMPORT_AND_LIST = """
import importlib, importlib.metadata, json, sys
module = importlib.import_module(sys.argv[1])
import episodes
names = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()})
print(json.dumps({"file": module.__file__, "installed": names}))
"""


def _import_and_list(python: Path, module: str, cwd: Path) -> tuple[str, set[str]]:
    """Where `module` (and the episodes package beside it) import from in `python`'s environment, and what that
    environment holds."""
    found = json.loads(_run(python, "-c", _IMPORT_AND_LIST, module, cwd=cwd))
    return found["file"], {re.sub(r"[-_.]+", "-", name).lower() for name in found["installed"]}


@pytest.mark.slow
def test_the_client_installs_alone_into_an_empty_venv(tmp_path: Path) -> None:
    # A copy of the two directories the client's pyproject.toml builds from: setuptools builds in the source
    # tree, and the checkout stays untouched (two test processes could otherwise build in it at once).
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for package in ("ddpg_client", "episodes"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    # Built once, as `pip install ./ddpg_client` builds it (in an isolated environment holding only the build
    # requirements its pyproject.toml declares); both installs below take this wheel, so the [stream] one does
    # not build it again.
    wheel = _build_wheel(source / "ddpg_client", tmp_path / "dist")
    # Without pip: nothing in it but the standard library, and this pip installs into it (`--python`), which
    # spares copying and compiling a pip of its own.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _pip_install(python, str(wheel), cwd=tmp_path)

    # Imported from the new environment (an empty directory as cwd, so not from a source tree).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    module_file, installed = _import_and_list(python, "ddpg_client", cwd=elsewhere)
    assert str(venv) in module_file
    assert {"ddpg-client", "httpx", "numpy"} <= installed
    assert not installed & SERVER_ONLY, sorted(installed & SERVER_ONLY)

    # The stream extra adds websockets and msgpack (binary frames), and only those, for WS /act/stream.
    _pip_install(python, f"{wheel}[stream]", cwd=tmp_path)
    _, with_stream = _import_and_list(python, "ddpg_client.stream", cwd=elsewhere)
    assert with_stream - installed == {"websockets", "msgpack"}
