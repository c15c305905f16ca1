"""How the tests start the project's processes (`python -m app`, `python -m trainer worker`, `python -m uvicorn`...):
forked from a preloaded Python (tests/prefork_server.py) when they can be, else the usual way.

`start` and `run` take what `subprocess.Popen` and `subprocess.run` take for these processes and give back
something that behaves the same (pid, poll, wait, send_signal/terminate/kill, returncode; a CompletedProcess).
A forked process is a process of its own in every way a test can see, and it imports and runs the project's code
itself; what it is spared is importing the third-party libraries again (about 1.5 CPU s of the 2 to 3 it takes a
server or worker process to start). Commands other than `python -m <project module>` start the usual way, and
so does everything when PREFORK=0 is set (to rule the preloading out when a test fails). Of the processes the
project starts itself, uvicorn's workers are forked by a forked API process (tests/prefork_server.py), and the test
cluster's Ray workers by a preloaded Python of the cluster's own (tests/trainer/sweeps/preloaded_ray.py); the
service's embedded worker and a local Ray's processes start the usual way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

LOG = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SWITCH_ENV = "PREFORK"
# Which preloaded Python forks which module's processes (tests/prefork_server.py PRELOADS). The API's must not
# have PyTorch in it: the service's processes never import it, and a test checks that.
KIND_OF_MODULE = {"app": "api", "uvicorn": "api", "store": "api", "trainer": "trainer"}
# Read by the interpreter at start or by a library when it is imported, so a child asking for a value other than
# the preloaded Python's has to start the usual way. Three the child applies itself (LATE_SETTINGS). And
# OPENBLAS_NUM_THREADS is 1 in the preloaded Python whatever the child asks: NumPy's BLAS threads would make it
# unsafe to fork. The API sets that itself; the trainer's processes do their numerical work in PyTorch. Likewise
# pyarrow's allocator runs without its background thread (JE_ARROW_MALLOC_CONF), which only changes when freed pages
# go back to the system. prometheus_client picks its multiprocess mode when imported (the child picks it again once
# its environment is set: PROMETHEUS_MULTIPROC_DIR is one of LATE_SETTINGS), pyarrow and gRPC read theirs when first
# used.
START_TIME_PREFIXES = (
    "PYTHON", "NUMBA_", "OMP_", "MKL_", "TORCH_", "KMP_", "CUDA_", "PROMETHEUS_", "prometheus_", "ARROW_", "GRPC_",
)  # fmt: skip
PRELOADED_ENV = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
LATE_SETTINGS = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PROMETHEUS_MULTIPROC_DIR"}
# The project's own settings whose names merely share a prefix above: read from the environment by the process's
# settings when it starts (app.settings), after the fork, so a child may ask for any value. gRPC itself reads none
# of them (its variables, GRPC_VERBOSITY, GRPC_TRACE and the like, still start the usual way).
PROJECT_SETTINGS = {"GRPC_PORT"}


class ChildProcess(Protocol):
    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class ForkedProcess:
    """A process forked by a preloaded Python: Popen's interface, its exit learnt from that Python (its parent)."""

    def __init__(self, args: Sequence[str], pid: int, preloaded: PreloadedPython) -> None:
        self.args = list(args)
        self.pid = pid
        self.returncode: int | None = None
        self._preloaded = preloaded

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._preloaded.returncode(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._preloaded.returncode(self.pid, timeout=timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)


class PreloadedPython:
    """One tests/prefork_server.py process and the socket to it; a thread records its children's exits."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env = {**os.environ, **PRELOADED_ENV}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.prefork_server", kind, str(theirs.fileno())],
            cwd=REPO,
            env=self.env,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.control = ours
        self._lock = threading.Condition()
        self._next_id = 0
        self._started: dict[int, int] = {}
        self._exited: dict[int, int] = {}
        hello = json.loads(self.control.recv(1 << 16) or b'{"unavailable": "it exited"}')
        self.available = "ready" in hello
        if not self.available:
            LOG.warning("no preloaded Python for %s processes (%s): they start the usual way", kind, hello)
            return
        threading.Thread(target=self._read_replies, name=f"prefork-{kind}", daemon=True).start()

    def _read_replies(self) -> None:
        with contextlib.suppress(OSError):  # the socket closed under it: close_all at the end of the session
            self._read_loop()
        with self._lock:
            self.available = False
            self._lock.notify_all()

    def _read_loop(self) -> None:
        while message := self.control.recv(1 << 16):
            reply = json.loads(message)
            with self._lock:
                if "exited" in reply:
                    self._exited[reply["exited"]] = reply["returncode"]
                else:
                    self._started[reply["id"]] = reply["pid"]
                    # A pid is used again only after its process was reaped, whose exit came in before this.
                    self._exited.pop(reply["pid"], None)
                self._lock.notify_all()

    def settings_it_cannot_take(self, env: Mapping[str, str]) -> list[str]:
        """The start-time settings in `env` that differ from the preloaded Python's (all of them: unavailable)."""
        if not self.available:
            return ["(no preloaded Python)"]
        return sorted(
            name
            for name in {*env, *self.env}
            if name.startswith(START_TIME_PREFIXES)
            and name not in LATE_SETTINGS
            and name not in PROJECT_SETTINGS
            and env.get(name) != self.env.get(name)
        )

    def fork(
        self,
        module: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | str,
        stdio: tuple[int, int, int],
        process_group: int | None,
        new_session: bool,
        unbuffered: bool,
    ) -> int:
        with self._lock:
            request_id = self._next_id
            self._next_id += 1
        request = {
            "id": request_id,
            "module": module,
            "args": list(args),
            "env": dict(env),
            "cwd": str(Path(cwd).resolve()),
            "process_group": process_group,
            "new_session": new_session,
            "unbuffered": unbuffered,
        }
        socket.send_fds(self.control, [json.dumps(request).encode()], list(stdio))
        with self._lock:
            if not self._lock.wait_for(lambda: request_id in self._started or not self.available, timeout=30):
                raise RuntimeError(f"the preloaded {self.kind} Python did not fork {module}")
            if request_id not in self._started:
                raise RuntimeError(f"the preloaded {self.kind} Python ended")
            return self._started.pop(request_id)

    def returncode(self, pid: int, *, timeout: float | None) -> int | None:
        with self._lock:
            self._lock.wait_for(lambda: pid in self._exited or not self.available, timeout=timeout)
            return self._exited.get(pid)

    def close(self) -> None:
        """Tell the preloaded Python to exit; `wait_closed` waits for it."""
        with contextlib.suppress(OSError):
            self.control.shutdown(socket.SHUT_RDWR)  # the preloaded Python reads the end of its requests and exits
        self.control.close()

    def wait_closed(self) -> None:
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_PRELOADED: dict[str, PreloadedPython] = {}
_PRELOADED_LOCK = threading.Lock()


def _preloaded(kind: str) -> PreloadedPython:
    with _PRELOADED_LOCK:
        if kind not in _PRELOADED:
            _PRELOADED[kind] = PreloadedPython(kind)
        return _PRELOADED[kind]


def close_all() -> None:
    """Stop the preloaded Pythons (at the end of the test session)."""
    with _PRELOADED_LOCK:
        for preloaded in _PRELOADED.values():
            preloaded.close()
        for preloaded in _PRELOADED.values():  # both exit at once
            preloaded.wait_closed()
        _PRELOADED.clear()


def _module_command(command: Sequence[str]) -> tuple[str, list[str], bool] | None:
    """(module, its arguments, unbuffered) for `<this python> [-u] -m <module> ...`; None for anything else."""
    if len(command) < 3 or command[0] != sys.executable:
        return None
    rest = list(command[1:])
    unbuffered = False
    if rest[0] == "-u":
        unbuffered = True
        rest = rest[1:]
    if len(rest) < 2 or rest[0] != "-m" or rest[1].split(".")[0] not in KIND_OF_MODULE:
        return None
    return rest[1], rest[2:], unbuffered


@contextlib.contextmanager
def _descriptors(
    stdin: IO[Any] | int, stdout: IO[Any] | int | None, stderr: IO[Any] | int | None
) -> Iterator[tuple[int, int, int]]:
    """The child's stdin, stdout and stderr as descriptors, as Popen reads its arguments (None: the test process's
    own); /dev/null is opened for DEVNULL and closed once the descriptors are sent."""
    opened: list[int] = []

    def descriptor(stream: IO[Any] | int | None, inherited: int) -> int:
        if stream is None:
            return inherited
        if stream == subprocess.DEVNULL:
            opened.append(os.open(os.devnull, os.O_RDWR))
            return opened[-1]
        return stream if isinstance(stream, int) else stream.fileno()

    try:
        out = descriptor(stdout, 1)
        yield descriptor(stdin, 0), out, out if stderr == subprocess.STDOUT else descriptor(stderr, 2)
    finally:
        for fd in opened:
            os.close(fd)


def start_process(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str = REPO,
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    process_group: int | None = None,
    start_new_session: bool = False,
    preloaded: bool = True,
) -> ChildProcess:
    """`subprocess.Popen(command, ...)` for one of the project's processes. stdout/stderr: a file, a descriptor,
    DEVNULL or STDOUT (stderr only); pipes are not supported. `preloaded=False` starts it the usual way: for a test
    that reads the process's /proc/<pid>/environ, which in a forked process still shows the preloaded Python's."""
    environment = dict(os.environ if env is None else env)
    parsed = _module_command(command)
    if parsed is not None and preloaded and os.environ.get(SWITCH_ENV, "1") != "0":
        module, args, unbuffered = parsed
        python = _preloaded(KIND_OF_MODULE[module.split(".")[0]])
        differing = python.settings_it_cannot_take(environment)
        if not differing:
            # The test process's own stdin is the pytest worker's channel: a child reads nothing from it.
            with _descriptors(subprocess.DEVNULL if stdin is None else stdin, stdout, stderr) as stdio:
                pid = python.fork(
                    module,
                    args,
                    env=environment,
                    cwd=cwd,
                    stdio=stdio,
                    process_group=process_group,
                    new_session=start_new_session,
                    unbuffered=unbuffered or bool(environment.get("PYTHONUNBUFFERED")),
                )
            return ForkedProcess(command, pid, python)
        LOG.info("%s starts the usual way: %s differ from the preloaded Python's", module, ", ".join(differing))
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=environment,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        process_group=process_group,
        start_new_session=start_new_session,
    )


def run_process(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str = REPO,
    timeout: float | None = None,
    check: bool = False,
    preloaded: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(command, capture_output=True, text=True, ...)` for one of the project's processes."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = start_process(command, env=env, cwd=cwd, stdout=out, stderr=err, preloaded=preloaded)
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        out.seek(0)
        err.seek(0)
        completed = subprocess.CompletedProcess(
            list(command), returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace")
        )
    if check:
        completed.check_returncode()
    return completed
