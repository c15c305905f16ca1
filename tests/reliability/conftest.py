"""Fixtures of the reliability tests: real `python -m app` servers, real workers, and a TCP proxy standing in
for the database's network.

Every wait here is a bound on waiting (a deadline loop), never an assertion about how fast anything is.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.app.factories import free_port, make_policy_bytes
from tests.app.servers import REPO, server_env, wait_until_ready
from tests.conftest import POSTGRES_ENV, _postgres_schema_url
from tests.processes import ChildProcess, start_process
from tests.reliability.db_proxy import DbProxy

DEADLINE = 90.0
API_KEY = "rel-" + secrets.token_hex(16)


def wait_for(
    condition: Callable[[], bool], what: str, *, deadline: float = DEADLINE, logs: Callable[[], str] = str
) -> None:
    """Poll `condition` until true; fail with `what` (and the processes' logs) after `deadline` seconds."""
    stop = time.monotonic() + deadline
    while True:
        with contextlib.suppress(httpx.TransportError):
            if condition():
                return
        if time.monotonic() > stop:
            pytest.fail(f"gave up waiting for {what}\n{logs()}")
        time.sleep(0.1)


@dataclass
class Proc:
    """A started process with its combined stdout/stderr in a file."""

    name: str
    process: ChildProcess
    log_path: Path

    def log(self) -> str:
        return f"--- {self.name} (pid {self.process.pid}) ---\n{self.log_path.read_text(errors='replace')[-6000:]}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (the process and any children), then reap it."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> int:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


@dataclass
class Api(Proc):
    base_url: str = ""

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)


@dataclass
class Processes:
    """Starts API servers and trainer workers; whatever is still running at teardown is killed."""

    tmp_path: Path
    started: list[Proc] = field(default_factory=list)

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> tuple[ChildProcess, Path]:
        log_path = self.tmp_path / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            process = start_process(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        return process, log_path

    def api(self, database_url: str, *, ready: str | None = "/readyz", port: int | None = None, **settings: str) -> Api:
        """`python -m app` with no embedded worker and no bootstrap job, unless `settings` say otherwise."""
        port = port or free_port()
        values = {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "EMBEDDED_WORKER": "false",
            "BOOTSTRAP_JOB": "false",
            "POLICY_REFRESH_SECONDS": "0.2",
            **settings,
        }
        process, log_path = self._spawn("api", [sys.executable, "-m", "app"], server_env(self.tmp_path, **values))
        api = Api("api", process, log_path, base_url=f"http://127.0.0.1:{port}")
        self.started.append(api)
        if ready is not None:
            wait_until_ready(api.base_url, process, log_path, path=ready, deadline=DEADLINE)
        return api

    def worker(self, database_url: str, *args: str) -> Proc:
        env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}
        command = [sys.executable, "-m", "trainer", "worker", "--poll-interval=0.2", *args]
        process, log_path = self._spawn("worker", command, env)
        proc = Proc("worker", process, log_path)
        self.started.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(proc.log() for proc in self.started)

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'reliability.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    yield from _postgres_schema_url(base)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database_url(request: pytest.FixtureRequest) -> str:
    """Either database, empty (the server migrates it)."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "actor.safetensors"
    path.write_bytes(make_policy_bytes(7))
    return path


# A real training job cut down to well under a second per episode (the real trainer, in a worker process).
TINY_JOB = {
    "preset": "default",
    "episodes": 3,
    "max_episode_steps": 50,
    "eval_episodes": 1,
    "hidden_size": 16,
    "batch_size": 32,
    "learning_starts": 32,
    "random_steps": 32,
    "promote": "never",
}
# Still running when a test interrupts it: many episodes, evaluation only at the (never reached) end.
LONG_JOB = {**TINY_JOB, "episodes": 1000, "eval_every": 0}


# The proxy's former name, which tests import from here.
TcpProxy = DbProxy


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A stopped proxy in front of the test PostgreSQL, and the test schema's URL through it."""
    parsed = make_url(postgres_url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    yield proxy, proxy.url_for(postgres_url)
    proxy.stop()


@pytest.fixture
def db_proxy(postgres_proxy: tuple[DbProxy, str]) -> tuple[DbProxy, str]:
    """A running proxy in front of the test PostgreSQL (a fresh schema), and the schema's URL through it."""
    proxy, url = postgres_proxy
    proxy.start()
    return proxy, url
