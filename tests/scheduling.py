"""How a `pytest -n N` run (`make test`) shares the tests between its xdist workers.

Two rules, both about wall time on a 2-core machine, neither about what a test checks:

- A module is one unit of work, sent to one worker: a server, a Ray cluster or a training run that its tests share
  (a module-scoped fixture) is set up once, not once per worker. Modules that share a session-scoped fixture are
  one unit too (SAME_WORKER). (xdist's own `--dist loadgroup` marks do not group under pytest 9, which no longer
  lets xdist rename a test.)
- The longest unit goes first (longest-processing-time-first): with the short ones last, the workers end together
  instead of one idling while the other finishes a long test. A test's length is its time in the last run that
  recorded it (pytest's cache, `.pytest_cache`); else tests/durations.json (committed, for a fresh clone); else a
  `slow` test counts as long.

An explicit `--dist` other than the default `load` is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# A module -> the module whose worker it runs on: they share a session-scoped fixture (`trained`, one CLI training).
SAME_WORKER = {"tests/trainer/test_cli_exports.py": "tests/trainer/test_cli.py"}
DURATIONS_KEY = "ddpg/durations"
COMMITTED_DURATIONS = Path(__file__).with_name("durations.json")
# Seconds assumed for a test with no recorded time: `slow` ones start real processes or train.
UNKNOWN_SLOW_SECONDS = 20.0
UNKNOWN_SECONDS = 0.2


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or the module it must share a worker with."""
    module = nodeid.split("::", 1)[0]
    return SAME_WORKER.get(module, module)


def longest_first(items: list[pytest.Item], recorded: dict[str, float]) -> list[pytest.Item]:
    """Units (their tests together, in their order), the longest unit first; ties keep their order."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(unit_of(item.nodeid), []).append(item)

    def seconds(item: pytest.Item) -> float:
        known = recorded.get(item.nodeid)
        if known is not None:
            return known
        return UNKNOWN_SLOW_SECONDS if item.get_closest_marker("slow") else UNKNOWN_SECONDS

    ordered = sorted(units.values(), key=lambda unit: -sum(seconds(item) for item in unit))
    return [item for unit in ordered for item in unit]


def _module_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """xdist's scope scheduling with `unit_of` as the scope, in the order the workers collected."""

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order the workers collected in
    return ModuleScheduling(config, log)


class Scheduling:
    """Orders the collected tests (in every worker alike), sends modules whole, records each test's time."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.times: dict[str, float] = {}

    def _recorded(self) -> dict[str, float]:
        recorded: dict[str, float] = {}
        if COMMITTED_DURATIONS.is_file():
            recorded.update(json.loads(COMMITTED_DURATIONS.read_text()))
        cache = getattr(self.config, "cache", None)
        cached = cache.get(DURATIONS_KEY, {}) if cache is not None else {}
        if isinstance(cached, dict):
            recorded.update(cached)
        return recorded

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # After pytest's own reordering by fixture scope. Every worker reads the same files, so every worker
        # collects the same order, which xdist requires.
        items[:] = longest_first(items, self._recorded())

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        return _module_scheduler(config, log) if config.getvalue("dist") == "load" else None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.times[report.nodeid] = self.times.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or hasattr(self.config, "workerinput") or not self.times:
            return  # workers report to the controller, which writes once
        cached = cache.get(DURATIONS_KEY, {})
        previous = cached if isinstance(cached, dict) else {}
        cache.set(DURATIONS_KEY, {**previous, **{nodeid: round(t, 2) for nodeid, t in self.times.items()}})


def register(config: pytest.Config) -> None:
    config.pluginmanager.register(Scheduling(config), "ddpg-test-scheduling")
