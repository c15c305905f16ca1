"""The service as `make run` starts it (`.venv/bin/python -m app`), on a fresh DATA_DIR, and stopped with everything
it started: its worker, its sweep runner and the local Ray that runner starts for a sweep."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.settings import Settings

logger = logging.getLogger("readme")

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(work: Path, port: int) -> dict[str, str]:
    """This environment without any of the service's settings (a fresh `make run` has none), plus a DATA_DIR, a
    port and a HOME of its own: Ray keeps its session token under ~/.ray, and the HOME marks every process the
    service starts, so the ones left at the end can be found."""
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    home = work / "home"
    home.mkdir(exist_ok=True)
    env.update({"DATA_DIR": str(work / "data"), "PORT": str(port), "HOME": str(home), "PYTHONUNBUFFERED": "1"})
    return env


@contextlib.contextmanager
def running_service(work: Path, port: int, *, ready_within: float = 120.0) -> Iterator[Service]:
    """`python -m app` in its own process group, up once /healthz answers; stopped as Ctrl-C stops it, then its
    leftovers (matched by the HOME it was given) killed."""
    env = service_env(work, port)
    log_path = work / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(VENV_PYTHON), "-m", "app"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )
        service = Service(process, log_path, port)
        try:
            _wait_healthy(service, ready_within)
            yield service
        finally:
            _stop(service)
            _kill_leftovers(f"HOME={env['HOME']}".encode())


def _wait_healthy(service: Service, within: float) -> None:
    url = f"http://127.0.0.1:{service.port}/healthz"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"the service exited with {service.process.returncode}:\n{service.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"/healthz did not answer within {within:.0f} s:\n{service.log_tail()}")


# Ctrl-C first, as a `make run` user stops it (to the service alone: it stops its children itself); then the group.
_STOP_STEPS = ((signal.SIGINT, False, 90.0), (signal.SIGTERM, True, 30.0), (signal.SIGKILL, True, 30.0))


def _stop(service: Service) -> None:
    process = service.process
    for signum, whole_group, grace in _STOP_STEPS:
        if process.poll() is not None:
            break
        if signum != signal.SIGINT:
            logger.warning("the service is still up; sending %s to its process group", signum.name)
        with contextlib.suppress(ProcessLookupError):
            (os.killpg if whole_group else os.kill)(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    if process.returncode != 0:
        logger.warning("the service exited with %s after SIGINT", process.returncode)
    # Whatever is left of its group goes too (Ray's own processes run in sessions of their own: see below).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def processes_with(marker: bytes) -> list[int]:
    """Live processes whose environment holds `marker` (an exact NAME=value entry)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def _kill_leftovers(marker: bytes, grace: float = 30.0) -> None:
    """The service stops its local Ray itself; whatever is still up after `grace` seconds is killed, and said."""
    deadline = time.monotonic() + grace
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = processes_with(marker)
    if left:
        logger.warning("%d processes the service started were still running %.0f s after it stopped; killing %s",
                       len(left), grace, left)  # fmt: skip
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
