"""The embedded children's supervisor with stand-in children (small Python processes): a child that dies is
started again with growing delays, one that keeps dying is left down, and stopping is one INFO line per child."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import app.infra.supervisor as supervisor
from app.infra.child_states import ChildStatesFile
from app.infra.supervisor import EmbeddedChildren

# Stops cleanly on SIGTERM, as the trainer's processes do.
SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(600)"
DEADLINE = 20.0


def _wait(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def states(tmp_path: Path) -> ChildStatesFile:
    return ChildStatesFile(tmp_path / "states.json")


@pytest.fixture(autouse=True)
def _fast_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_RESTART_DELAY_SECONDS", 0.2)


def test_a_killed_child_is_restarted_and_its_state_says_so_meanwhile(
    states: ChildStatesFile, caplog: pytest.LogCaptureFixture
) -> None:
    children = EmbeddedChildren(states)
    children.start("trainer worker", [sys.executable, "-c", SLEEPER], dict(os.environ), "jobs will stay queued")
    try:
        first = states.read()["trainer worker"]
        assert (first.state, first.restarts, first.exit_code) == ("running", 0, None)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        _wait(lambda: states.read()["trainer worker"].state == "restarting", "the restarting state")
        assert states.read()["trainer worker"].exit_code == -signal.SIGKILL
        _wait(lambda: states.read()["trainer worker"].restarts == 1, "the restart")
        again = states.read()["trainer worker"]
        assert again.state == "running" and again.pid not in (None, first.pid)
    finally:
        with caplog.at_level(logging.INFO, logger="app.infra.supervisor"):
            caplog.clear()
            children.stop_all()
    assert states.read()["trainer worker"].state == "stopped"
    # 0, or -15 when SIGTERM came before the new child had installed its handler: both are a stop as asked.
    [record] = caplog.records
    assert record.levelname == "INFO"
    assert record.getMessage() in {f"embedded trainer worker stopped (exit code {code})" for code in (0, -15)}


def test_a_child_that_keeps_dying_is_left_down_after_the_bounded_restarts(
    states: ChildStatesFile, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "FIRST_RESTART_DELAY_SECONDS", 0.01)
    monkeypatch.setattr(supervisor, "MAX_QUICK_RESTARTS", 3)
    children = EmbeddedChildren(states)
    with caplog.at_level(logging.INFO, logger="app.infra.supervisor"):
        children.start("sweep runner", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), "no sweeps")
        _wait(lambda: states.read()["sweep runner"].state == "failed", "the child to be given up")
        children.stop_all()
    final = states.read()["sweep runner"]
    assert (final.state, final.restarts, final.exit_code) == ("stopped", 3, 3)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors[:3] == ["embedded sweep runner exited with code 3; restarting it in 0 s"] * 3
    assert errors[3:] == [
        "embedded sweep runner exited with code 3 after 3 restarts in a row; not restarting it again: no sweeps"
    ]
    assert caplog.records[-1].getMessage() == "embedded sweep runner stopped (it was down)"


def test_every_child_is_asked_to_stop_at_once_and_a_stubborn_one_is_killed(
    states: ChildStatesFile, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(supervisor, "STOP_TIMEOUT_SECONDS", 1.0)
    # Each child touches the file named by its argument once its SIGTERM handler is in place.
    ready = "; open(sys.argv[1], 'w').close(); time.sleep(600)"
    polite = SLEEPER.replace("; time.sleep(600)", ready)
    stubborn = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)" + ready
    markers = [tmp_path / "a.ready", tmp_path / "b.ready"]
    children = EmbeddedChildren(states)
    children.start("a", [sys.executable, "-c", polite, str(markers[0])], dict(os.environ), "-")
    children.start("b", [sys.executable, "-c", stubborn, str(markers[1])], dict(os.environ), "-")
    _wait(lambda: all(marker.exists() for marker in markers), "both children to install their handlers")
    caplog.clear()  # only what stopping logs
    with caplog.at_level(logging.INFO, logger="app.infra.supervisor"):
        started = time.monotonic()
        children.stop_all()
        took = time.monotonic() - started
    assert took < 5  # not one timeout after the other
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("INFO", "embedded a stopped (exit code 0)"),
        ("WARNING", "embedded b did not stop within 1 s; killing it"),
        ("WARNING", "embedded b stopped with exit code -9"),
    ]
