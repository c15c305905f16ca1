"""`python -m app`'s embedded children (`python -m trainer worker`, `python -m trainer sweeps`), kept running.

Each child runs at idle CPU priority (the learner process at the niceness EMBEDDED_LEARNER_NICENESS gives) in a
process group of its own, so a terminal's Ctrl-C reaches only the launcher,
which stops the API first and then its children, in order: SIGTERM, after which each child ends its work (the worker
releases its job; the runner stops Tune, then its local Ray) and exits 0. A child that dies on its own (a crash, the
OOM killer, a SIGKILL) is started again after a delay that doubles each time it dies young (1 s, 2 s, ... 16 s); when
it dies again after MAX_QUICK_RESTARTS such restarts in a row, it is left down, with an ERROR saying what will not
happen. Every change of
state goes to the states file that `/readyz` shows (app.infra.child_states).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from app.infra.child_states import ChildState, ChildStateName, ChildStatesFile

logger = logging.getLogger(__name__)

# The worker finishes its current episode on SIGTERM (a second or so), the runner stops Tune and Ray (a few
# seconds); after this it is killed.
STOP_TIMEOUT_SECONDS = 30.0
# Restart delays: FIRST_RESTART_DELAY_SECONDS, doubled after each death of a child that ran less than
# STABLE_SECONDS, for up to MAX_QUICK_RESTARTS restarts in a row; a child that ran longer starts over at the first.
FIRST_RESTART_DELAY_SECONDS = 1.0
STABLE_SECONDS = 60.0
MAX_QUICK_RESTARTS = 5
# Exit codes of a child stopped as asked: 0 (it handled SIGTERM), -SIGTERM (it was killed by it before its handler
# was installed, while starting), and SIGTERM itself (Ray's handler, in place while the runner starts a local Ray,
# exits with the signal's number).
STOPPED_AS_ASKED = frozenset({0, -signal.SIGTERM, signal.SIGTERM})
# The embedded worker shares the machine with the API and must not show up in /act's tail latency. On Linux it
# runs as SCHED_IDLE: it gets the CPU nobody else wants (all of it without traffic), and a waking API process
# preempts it at once. Measured (bench/serve_bench.py, 1 worker, 16 connections): /act p99 while a job trains
# was 2.1-2.5x idle at niceness 10, 1.7x at 19, 1.4x as SCHED_IDLE; the job kept training in all three. Where
# SCHED_IDLE is refused, the lowest priority niceness gives. A docker compose worker has its own container.
WORKER_NICENESS = 19
_PR_SET_PDEATHSIG = 1


class EmbeddedChildren:
    """The children of one launcher and the file their states are published in."""

    def __init__(self, states_file: ChildStatesFile | None) -> None:
        self._states_file = states_file
        self._children: list[EmbeddedChild] = []
        self._lock = threading.Lock()

    def start(
        self, name: str, command: list[str], env: dict[str, str], consequence: str, *, niceness: int | None = None
    ) -> EmbeddedChild:
        """Run `command` with `env` as the child `name`; `consequence` says what stops happening while it is down.
        `niceness`: run it at that niceness instead of idle priority."""
        child = EmbeddedChild(name, command, env, consequence, on_change=self._publish, niceness=niceness)
        self._children.append(child)
        child.start()
        return child

    def stop_all(self) -> None:
        """SIGTERM to every child at once, then wait for each (so the slowest sets the time, not their sum)."""
        for child in self._children:
            child.ask_to_stop()
        for child in self._children:
            child.wait_stopped()

    def _publish(self) -> None:
        if self._states_file is None:
            return
        with self._lock:
            try:
                self._states_file.write({child.name: child.state() for child in self._children})
            except OSError as exc:  # /readyz then shows the previous states; the children run on regardless
                logger.warning("could not write the embedded children's states: %s", exc)


class EmbeddedChild:
    """One child process: started, watched by a thread that restarts it when it dies, and stopped on request."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        consequence: str,
        *,
        on_change: Callable[[], None],
        niceness: int | None = None,
    ) -> None:
        self.name = name
        self._niceness = niceness  # None: idle priority
        self._command = command
        self._env = env
        self._consequence = consequence  # what stops happening while it is down, for the log
        self._on_change = on_change
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._state: ChildStateName = "running"
        self._restarts = 0
        self._exit_code: int | None = None
        self._watcher = threading.Thread(target=self._watch, name=f"{name.replace(' ', '-')}-watch", daemon=True)

    def state(self) -> ChildState:
        with self._lock:
            pid = None if self._process is None else self._process.pid
            return ChildState(self._state, pid, self._restarts, self._exit_code)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def ask_to_stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def wait_stopped(self) -> None:
        """Wait for the child asked to stop (SIGKILL after STOP_TIMEOUT_SECONDS); one line says how it ended."""
        process = self._process
        if process is None:
            return
        if self._state != "running":  # it was down already (restarting, failed): its death was logged then
            self._set("stopped", process.wait())
            logger.info("embedded %s stopped (it was down)", self.name)
            return
        try:
            code = process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("embedded %s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT_SECONDS)
            process.kill()
            code = process.wait()
        self._set("stopped", code)
        if code in STOPPED_AS_ASKED:
            logger.info("embedded %s stopped (exit code %s)", self.name, code)
        else:
            logger.warning("embedded %s stopped with exit code %s", self.name, code)

    def _spawn(self) -> None:
        prctl = _parent_death_signal()  # resolved here: the child between fork and exec may only make system calls
        niceness = self._niceness
        with self._lock:
            if self._stopping.is_set():
                return
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                process_group=0,  # Ctrl-C reaches only the launcher, which stops the children itself, after the API
                preexec_fn=lambda: _prepare_child(prctl, niceness),  # noqa: PLW1509 - system calls only (see _prepare_child)
            )
            self._state = "running"
        logger.info("started embedded %s (pid %s)", self.name, self._process.pid)
        self._on_change()

    def _watch(self) -> None:
        quick_deaths = 0
        while True:
            process = self._process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < STABLE_SECONDS else 1
            if quick_deaths > MAX_QUICK_RESTARTS:
                self._set("failed", code)
                logger.error(
                    "embedded %s exited with code %s after %d restarts in a row; not restarting it again: %s",
                    self.name, code, MAX_QUICK_RESTARTS, self._consequence,
                )  # fmt: skip
                return
            delay = FIRST_RESTART_DELAY_SECONDS * 2 ** (quick_deaths - 1)
            self._set("restarting", code)
            logger.error("embedded %s exited with code %s; restarting it in %.0f s", self.name, code, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                self._restarts += 1
            self._spawn()

    def _set(self, state: ChildStateName, exit_code: int | None) -> None:
        with self._lock:
            self._state, self._exit_code = state, exit_code
        self._on_change()


def _parent_death_signal() -> Callable[[int, int], int] | None:
    """libc's prctl on Linux (to be called in the child), else None."""
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[[int, int], int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return prctl


def _prepare_child(  # pragma: no cover - runs in the child
    prctl: Callable[[int, int], int] | None, niceness: int | None
) -> None:
    """Between fork and exec: idle priority (or the niceness given), and SIGTERM when the launcher dies. System calls
    only (no imports, no locks): a restart forks from a thread while other threads of the API run."""
    if niceness is not None:
        if niceness > 0:
            os.nice(niceness)
    else:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):  # not Linux, or refused by a sandbox
            os.nice(WORKER_NICENESS)
    # If the launcher is killed hard (SIGKILL), the kernel sends the child SIGTERM, so it releases its work instead
    # of running on as an orphan.
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
