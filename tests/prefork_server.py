"""A preloaded Python that forks the tests' `python -m <module>` processes (run by tests/processes.py, one per pytest
worker and kind).

Most of the CPU the test suite spends starting a server, worker or learner process goes to importing the same
libraries again (FastAPI, SQLAlchemy, Alembic, NumPy; PyTorch for the trainer's processes): about 1.5 CPU s each,
for some 150 processes. This process imports them once, then forks a child per request. The child is a real
process of its own (its own pid, process group, environment, working directory, stdin/stdout/stderr, signals and
exit code) that runs the module as `python -m` does. The imports are inherited: the libraries', and the project's
own modules that the processes import at start (0.45 CPU s of the API's start-up, 0.15 of a trainer process's).
Importing those here is what each child would do itself: they read no setting at import (the settings are read
when the process starts), and what reads its environment at import is not preloaded (Ray and Tune, and the project
modules that import them). The child runs its `__main__` module itself, with its own arguments and environment.
A forked API process forks uvicorn's worker processes too (WORKERS, `--workers`: _UvicornWorkerStarts), where
uvicorn would start each as a new interpreter.

Forking is only safe from a single-threaded process: the server checks that its imports left it with one thread
and answers `unavailable` otherwise (the tests then start the process the usual way).

Protocol, over the SOCK_SEQPACKET socket whose descriptor is the second argument (one JSON object per message):
- request `{"id", "module", "args", "env", "cwd", "process_group", "new_session", "unbuffered"}` with three file
  descriptors attached (the child's stdin, stdout and stderr);
- replies `{"id", "pid"}` once the child runs, `{"exited": pid, "returncode": n}` when it ends (negative: killed by
  that signal, as subprocess reports it).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import multiprocessing
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

# The database layer, settings and weights, which both kinds of process use.
_STORE_AND_SETTINGS = [
    "numpy", "sqlalchemy", "sqlalchemy.orm", "alembic", "alembic.runtime.migration", "pydantic", "pydantic_settings",
    "httpx", "safetensors", "psycopg",
]  # fmt: skip
# What each kind of process imports that is worth importing once. Nothing that starts a thread at import (pyarrow's
# jemalloc does, unless told not to: tests/processes.py starts this process with its background thread off), and
# nothing that reads settings at import from the environment a test may change (Ray, Tune). gRPC starts no thread
# until a server or channel is made, which only a child does.
PRELOADS = {
    "api": [
        *_STORE_AND_SETTINGS, "fastapi", "fastapi.routing", "starlette.responses", "uvicorn", "prometheus_client",
        "sse_starlette", "numba", "app.launcher", "app.main",
    ],
    "trainer": [
        *_STORE_AND_SETTINGS, "torch", "gymnasium", "onnx", "trainer.cli", "trainer.worker", "trainer.online.process",
        "trainer.training",
    ],
}  # fmt: skip
MAX_MESSAGE = 1 << 20


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _reseed_after_fork() -> None:
    """`random` reseeds itself in a forked child; NumPy's global generator does not, and a process started the
    usual way draws its seed from the operating system."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _pick_prometheus_value_class() -> None:
    """prometheus_client chooses how a metric keeps its values when it is imported: in the process, or in files shared
    by all the processes of a server when PROMETHEUS_MULTIPROC_DIR is set (`python -m app` sets it for its workers, a
    test may set it itself). Every metric made afterwards reads that choice. It was imported here, before this
    process's environment was set, and no metric exists yet (the preloaded Python makes none, an API process makes its
    app's metrics when it creates the app), so it is chosen again, as the import would choose it now."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def _run_uvicorn_worker(worker: Callable[..., None], /, **kwargs: Any) -> None:
    """In a uvicorn worker forked by _UvicornWorkerStarts: start as a worker of a new interpreter would, then run
    uvicorn's own worker function (which configures logging, creates the app through uvicorn's import string and
    serves)."""
    from uvicorn.supervisors.multiprocess import SIGNALS

    # The supervisor's handlers only queue the signal for its own loop; a new interpreter has the defaults.
    for sig in SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    _pick_prometheus_value_class()  # PROMETHEUS_MULTIPROC_DIR is set by now: /metrics sums the workers
    _reseed_after_fork()
    worker(**kwargs)


class _UvicornWorkerStarts:
    """What uvicorn starts its `--workers N` (WORKERS=N) processes with, in a forked API process: a forked worker
    when this process has one thread, else (and for --reload) a new interpreter as uvicorn does (multiprocessing's
    spawn).

    uvicorn starts each worker as a new interpreter that imports again the modules this process already holds:
    1.9 CPU s until the worker serves, against 0.3 forked. A forked worker is still a process of its own that uvicorn
    supervises as before (as many of them, their own pids, health pings, restarts, signals and exit codes) and that
    creates its app itself through uvicorn's import string in its own process; what it is spared is importing the
    libraries again, as the API process itself is. The supervising process makes no app and no metric before it
    starts its workers, and each worker chooses prometheus_client's multiprocess mode again
    (_pick_prometheus_value_class): the launcher set PROMETHEUS_MULTIPROC_DIR after the import. What differs is
    invisible to the tests: no multiprocessing resource tracker process beside the workers (spawn starts one), and a
    worker ends as multiprocessing ends a forked process (its threads joined and its streams flushed, then os._exit;
    the app's lifespan has stopped everything of its own by then). Forking is only safe from a single-threaded
    process, hence the fallback (an API with embedded children watches them from threads)."""

    def __init__(self, spawn: Any) -> None:
        self._spawn = spawn
        self._fork = multiprocessing.get_context("fork")

    def Process(self, *, target: Callable[..., None], kwargs: dict[str, Any]) -> Any:  # noqa: N802  # uvicorn's call
        # With --reload the point of a new interpreter is to import the changed code: that stays uvicorn's way.
        if kwargs["config"].should_reload or _thread_count() != 1:
            return self._spawn.Process(target=target, kwargs=kwargs)
        return self._fork.Process(target=_run_uvicorn_worker, args=(target,), kwargs=kwargs)


def _fork_uvicorn_workers() -> None:
    """Have uvicorn start its workers through _UvicornWorkerStarts in this process (a forked API process only: the
    product's own processes keep uvicorn's behaviour)."""
    subprocess_module = sys.modules.get("uvicorn._subprocess")
    if subprocess_module is not None:
        subprocess_module.spawn = _UvicornWorkerStarts(subprocess_module.spawn)  # type: ignore[attr-defined]


def _reopen_std_streams(unbuffered: bool) -> None:
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "w", closefd=False)
        # As the interpreter does: stderr is always line-buffered, stdout too when unbuffered was asked for.
        stream = io.TextIOWrapper(
            raw if unbuffered else io.BufferedWriter(raw),
            line_buffering=name == "stderr" or unbuffered,
            write_through=unbuffered,
            errors="backslashreplace" if name == "stderr" else "strict",
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_code(exit: SystemExit) -> int:
    """What the interpreter makes of `sys.exit(code)`."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def run_and_exit_as_interpreter(become_and_run: Callable[[], object]) -> NoReturn:
    """In a forked child: run `become_and_run` (set the process up, then run its main module), then end the process
    as the interpreter ends one: its exit code that of `sys.exit` (1 after a printed traceback), a SIGINT that went
    unhandled ending it by that signal, non-daemon threads joined, atexit handlers run, streams flushed."""
    code = 1
    try:
        try:
            become_and_run()
            code = 0
        except SystemExit as exit:
            code = _exit_code(exit)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:  # printed as the interpreter prints it
            traceback.print_exc()
        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads are joined, as at a real exit
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a stream closed at exit is not worth a traceback
                stream.flush()
        os._exit(code)


def take_over(fds: list[int], cwd: str, env: dict[str, str]) -> None:
    """In a forked child: the standard streams (stdin, stdout, stderr: `fds`), working directory and environment of
    the process it stands in for."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)


@dataclass
class ChildExits:
    """A selector that wakes when a child ends (SIGCHLD through the wakeup fd), for a server that forks children."""

    selector: selectors.BaseSelector
    wakeup_read: int
    wakeup_write: int

    @classmethod
    def watch(cls) -> ChildExits:
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(wakeup_read, selectors.EVENT_READ)
        return cls(selector, wakeup_read, wakeup_write)

    def reaped(self) -> Iterator[tuple[int, int]]:
        """After a wakeup: each ended child's pid and return code (negative: killed by that signal)."""
        os.read(self.wakeup_read, 4096)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            yield pid, os.waitstatus_to_exitcode(status)

    def close_in_child(self) -> None:
        """In a forked child: none of this is its own; signals are handled as in a new interpreter."""
        self.selector.close()
        os.close(self.wakeup_read)
        os.close(self.wakeup_write)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_child(request: dict[str, Any], fds: list[int], started: int) -> NoReturn:
    """In the forked child: become the requested process, tell the parent (`started`), run the module, exit as the
    interpreter would."""

    def become_and_run() -> None:
        # As in a new interpreter: SIGPIPE and SIGXFSZ stay ignored (the interpreter ignores them at start).
        if request["new_session"]:
            os.setsid()
        elif request["process_group"] is not None:
            os.setpgid(0, request["process_group"])
        take_over(fds, request["cwd"], request["env"])
        sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
        _reopen_std_streams(request["unbuffered"])
        _reseed_after_fork()
        _pick_prometheus_value_class()
        _fork_uvicorn_workers()
        # Popen returns once its child runs the new program: by then the child has its own process group, so a
        # test may signal the group at once. The parent answers with the pid only after this.
        os.write(started, b"1")
        os.close(started)
        sys.argv = [request["module"], *request["args"]]
        sys.path[0] = request["cwd"]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)

    run_and_exit_as_interpreter(become_and_run)


def serve(control: socket.socket) -> None:
    exits = ChildExits.watch()
    exits.selector.register(control, selectors.EVENT_READ)
    while True:
        for key, _ in exits.selector.select():
            if key.fileobj == exits.wakeup_read:
                for pid, returncode in exits.reaped():
                    control.send(json.dumps({"exited": pid, "returncode": returncode}).encode())
                continue
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 3)
            if not message:
                return  # the tests' side closed: the pytest worker is done
            request = json.loads(message)
            started_read, started_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                exits.close_in_child()
                control.close()
                os.close(started_read)
                _run_child(request, fds, started_write)
            for fd in (*fds, started_write):
                os.close(fd)
            os.read(started_read, 1)  # empty if the child died first: the exit reply follows
            os.close(started_read)
            control.send(json.dumps({"id": request["id"], "pid": pid}).encode())


def _load_act_kernel() -> None:
    """Every API process compiles /act's one-observation kernel before it serves (app.lifespan), from numba's on-disk
    cache where NUMBA_CACHE_DIR names one (the tests set it): 0.6 CPU s of every API process's start-up, 0.3 of it
    numba building its CPU target's typing and lowering tables, and 1.3 instead where the cache is still empty (a
    fresh clone). Loaded once here, every forked API process and each of its uvicorn workers inherits the compiled
    kernel (models.fused caches it per process), as a process that had compiled it itself would hold it. A child
    asking for another NUMBA_ setting starts the usual way (tests/processes.py)."""
    from models.fused import forward_one_kernel

    forward_one_kernel()


def _build_served_routes() -> None:
    """FastAPI builds the handlers of the routers an app includes (dependencies, request and response models) on the
    first request that reaches them: 0.1 CPU s of every API process's first request. The apps of a process share
    those inclusions (app.main.SERVED_ROUTES); matching a request against each builds them here once, and every
    forked API inherits them."""
    from app.main import SERVED_ROUTES

    scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "headers": []}
    for route in SERVED_ROUTES.routes:
        route.matches(scope)


def main() -> None:
    kind, fd = sys.argv[1], int(sys.argv[2])
    control = socket.socket(fileno=fd)
    for module in PRELOADS[kind]:
        __import__(module)
    if kind == "api":
        _load_act_kernel()
        _build_served_routes()
    if _thread_count() != 1:
        control.send(json.dumps({"unavailable": f"{_thread_count()} threads after the imports"}).encode())
        return
    control.send(json.dumps({"ready": kind}).encode())
    serve(control)
    # Nothing of this process's own is left to clean up, and finalizing what it imported (PyTorch, Ray Tune...) took
    # 0.5 to 2 s of every pytest runner's exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
