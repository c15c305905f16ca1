"""`make test-docker` only: tests marked `docker` run when `-m` names the marker, and are deselected otherwise,
so `make test` never needs a Docker engine. The figures the stack tests measure are printed at the end of the
run and written to test-artifacts/docker-figures.json."""

from __future__ import annotations

import json
import time

import pytest

from tests.stack.engine import artifact

FIGURES = pytest.StashKey[dict[str, str]]()
STARTED = pytest.StashKey[float]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = {}
    config.stash[STARTED] = time.monotonic()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "docker" in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("docker") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("docker") is None]


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> dict[str, str]:
    """Name -> measured value, in the order measured; shown in the terminal summary."""
    return request.config.stash[FIGURES]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, {})
    if not figures:
        return
    figures["whole run (pytest session)"] = f"{time.monotonic() - config.stash[STARTED]:.0f} s"
    terminalreporter.write_sep("=", "docker stack figures")
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        terminalreporter.write_line(f"{name:<{width}}  {value}")
    artifact("docker-figures.json").write_text(json.dumps(figures, indent=2) + "\n")
