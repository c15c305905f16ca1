"""Real server processes for the integration tests: start, wait until ready, stop (and show logs on failure)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.processes import ChildProcess, start_process

REPO = Path(__file__).resolve().parents[2]


def server_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The test process's environment minus the service's settings, plus the given ones."""
    dropped = {"DATABASE_URL", "API_KEY", "ACT_API_KEY", "POLICY_FILE", "GRPC_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    # No sweep runner or learner process unless a test asks: each would be one more process in every server test,
    # idle but polling.
    env.update({"DATA_DIR": str(data_dir), "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    env.update({"EMBEDDED_SWEEP_RUNNER": "false", "EMBEDDED_LEARNER": "false", **settings})
    return env


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], log_path: Path, *, preloaded: bool = True
) -> Iterator[ChildProcess]:
    """Run `command` in its own process group (tests/processes.py: `preloaded`); SIGTERM it (then SIGKILL) when
    the block ends."""
    with log_path.open("wb") as log:
        process = start_process(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0, preloaded=preloaded
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(45)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def wait_until_ready(
    base_url: str, process: ChildProcess, log_path: Path, *, path: str = "/readyz", deadline: float = 60
) -> None:
    """Poll `path` until 200 (a bound on waiting, not a timing assertion); fail early if the server died."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}{path}", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{path} not 200 after {deadline} s:\n{log_path.read_text()[-4000:]}")


def uvicorn_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
    ]
