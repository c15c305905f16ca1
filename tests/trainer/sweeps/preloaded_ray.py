"""A preloaded Python that forks a test cluster's Ray worker processes, where each raylet would start a new
interpreter for each (tests/trainer/sweeps/ray_cluster.py starts one per cluster).

A trial's worker process spent 3 to 3.5 CPU seconds, nearly all of it importing Ray, Ray Tune with pandas, PyTorch
and the project's trainer; the two-node cluster tests start nine of them. This process imports what of that can be
imported before a fork (PRELOADS) and forks a child per worker. The cluster's nodes are started with an interpreter
path of their own (`write_shim`: a small script standing in for `python`). A raylet starts each worker as `<python>
default_worker.py ...` (or `<python> setup_worker.py ...` when a runtime environment is to be set up), and the script
hands that command, with its environment, working directory and standard streams, to this process. The child it
forks runs Ray's own script with the raylet's arguments: it connects to its raylet, registers with the startup token
it was given and runs its trials as any worker does, in a process group of its own as a raylet gives it. Every other
command the node runs with `python` (its agents, `python -m ...`) is run by the real interpreter.

Ray itself is not preloaded: its C++ core reads its environment (the worker's job id among it) when it is loaded,
so each worker imports Ray and Ray Tune itself. What it is spared is PyTorch, pandas, gymnasium, SQLAlchemy and the
trainer: a worker starts with about 1.5 CPU s less (tests/trainer/sweeps/test_cluster.py: 55 to 38 CPU s).

The script waits for its worker and exits as it does (SIGTERM, SIGINT and SIGHUP passed on); the worker ends when
the script does (a SIGKILL to the script: a thread of the worker waits on the script's pidfd), so a raylet that
signals either pid reaches the worker. `workers_of` names the workers behind given scripts, for a test that kills a
node's processes at once. This process ends when the process that started it does.

Protocol, over the Unix SOCK_SEQPACKET socket given as the first argument: the script sends one JSON message
`{"args", "env", "cwd", "shim"}` with its stdin, stdout and stderr attached; this process answers with a line
`{"pid"}` once the worker is forked and a line `{"returncode"}` when it ends (negative: killed by that signal).
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from tests.prefork_server import ChildExits, run_and_exit_as_interpreter, take_over

# What a trial's worker imports, less Ray; none of it starts a thread at import (with PRELOADED_ENV).
PRELOADS = [
    "numpy", "pandas", "torch", "gymnasium", "sqlalchemy", "sqlalchemy.orm", "psycopg", "safetensors",
    "trainer.training",
]  # fmt: skip
SHIM = """#!{python} -IS
import json, os, signal, socket, sys
args = sys.argv[1:]
if not (args and args[0].endswith(("/setup_worker.py", "/default_worker.py"))):
    os.execv({python!r}, [{python!r}, *args])
conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    conn.connect({socket_path!r})
except OSError:  # the preloaded Python is gone (its test is ending): start the usual way
    os.execv({python!r}, [{python!r}, *args])
request = {{"args": args, "env": dict(os.environ), "cwd": os.getcwd(), "shim": os.getpid()}}
socket.send_fds(conn, [json.dumps(request).encode() + b"\\n"], [0, 1, 2])
replies = conn.makefile("rb")
pid = json.loads(replies.readline())["pid"]
for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(number, lambda number, _: os.kill(pid, number))
line = replies.readline()
code = json.loads(line)["returncode"] if line else 1
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
os._exit(code & 0xFF)
"""


def write_shim(directory: Path, socket_path: Path) -> Path:
    """The stand-in for `python` that a node is started with."""
    path = directory / "python"
    path.write_text(SHIM.format(python=sys.executable, socket_path=str(socket_path)))
    path.chmod(0o755)
    return path


def forked(directory: Path) -> list[str]:
    """What this process has forked so far: a line per child, its pid and Ray's script."""
    log = directory / "forked.log"
    return log.read_text().splitlines() if log.exists() else []


def workers_of(directory: Path, shims: set[int]) -> list[int]:
    """The pids of the workers forked for the given scripts."""
    found = []
    for entry in (directory / "children").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            if int(entry.read_text()) in shims:
                found.append(int(entry.name))
    return found


def _die_with(shim: int) -> None:
    """A thread of the worker: end it when its script ends."""
    pidfd = os.pidfd_open(shim)

    def wait() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(pidfd, selectors.EVENT_READ)
            selector.select()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="dies-with-its-raylets-process", daemon=True).start()


_exec_worker: Any = None


def _run_in_this_process(context: Any, passthrough_args: list[str], language: Any) -> None:
    """RuntimeEnvContext.exec_worker, for a plain Python worker: the same environment, then Ray's worker script run
    here instead of exec'ed."""
    from ray._private.runtime_env.context import update_envs

    update_envs(context.env_vars)
    if context.command_prefix or context.override_worker_entrypoint or context.py_executable != sys.executable:
        _exec_worker(context, passthrough_args, language)  # a runtime environment of its own: Ray's way
    options = list(passthrough_args)
    while options and options[0] == "-u":  # the streams are line-buffered here already
        options.pop(0)
    if options[:1] == ["-m"]:
        sys.argv = ["-m", *options[2:]]
        runpy.run_module(options[1], run_name="__main__", alter_sys=True)
    elif options and not options[0].startswith("-"):
        sys.argv = options
        runpy.run_path(options[0], run_name="__main__")
    else:
        os.execv(sys.executable, [sys.executable, *passthrough_args])


def _run_child(request: dict[str, Any], fds: list[int]) -> NoReturn:
    def become_and_run() -> None:
        # A group of its own, as a raylet gives each worker it starts: Ray may signal a worker's whole group.
        os.setpgid(0, 0)
        take_over(fds, request["cwd"], request["env"])
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  # the process's own streams
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        _die_with(request["shim"])
        from ray._private.runtime_env.context import RuntimeEnvContext

        global _exec_worker
        _exec_worker = RuntimeEnvContext.exec_worker
        RuntimeEnvContext.exec_worker = _run_in_this_process  # type: ignore[method-assign]
        sys.argv = list(request["args"])
        runpy.run_path(request["args"][0], run_name="__main__")

    run_and_exit_as_interpreter(become_and_run)


def serve(listener: socket.socket, directory: Path) -> None:
    children = directory / "children"
    children.mkdir(exist_ok=True)
    exits = ChildExits.watch()
    exits.selector.register(listener, selectors.EVENT_READ)
    parent = os.pidfd_open(os.getppid())
    exits.selector.register(parent, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}
    while True:
        for key, _ in exits.selector.select():
            if key.fileobj == parent:
                return  # the test process is gone: so is the cluster
            if key.fileobj == exits.wakeup_read:
                for pid, returncode in exits.reaped():
                    _report_exit(waiting.pop(pid, None), returncode)
                    (children / str(pid)).unlink(missing_ok=True)
                continue
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                exits.close_in_child()
                for other in (listener, conn, *waiting.values()):
                    other.close()
                os.close(parent)
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            (children / str(pid)).write_text(str(request["shim"]))
            with (directory / "forked.log").open("a") as log:
                log.write(f"{pid} {Path(request['args'][0]).name}\n")
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            waiting[pid] = conn


def _report_exit(conn: socket.socket | None, returncode: int) -> None:
    if conn is not None:
        with contextlib.suppress(OSError):  # the script is gone: it was killed
            conn.sendall(json.dumps({"returncode": returncode}).encode() + b"\n")
        conn.close()


def main() -> None:
    socket_path, directory = Path(sys.argv[1]), Path(sys.argv[2])
    for module in PRELOADS:
        __import__(module)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        sys.exit(f"{threads} threads after the imports: forking is not safe")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(socket_path))
    listener.listen(16)
    os.write(1, b"ready\n")  # to the cluster that started it
    serve(listener, directory)
    os._exit(0)  # what it imported needs no finalizing


if __name__ == "__main__":
    main()
