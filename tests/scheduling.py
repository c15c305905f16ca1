"""How a `pytest -n N` run (`make test`) shares the tests between its xdist workers.

Two rules, both about wall time on a 2-core machine, neither about what a test checks:

- A module is one unit of work, sent to one worker: a server, a Ray cluster or a training run that its tests share
  (a module-scoped fixture) is set up once, not once per worker. Modules that share a session- or package-scoped
  fixture are one unit too (SAME_WORKER). (xdist's own `--dist loadgroup` marks do not group under pytest 9, which
  no longer lets xdist rename a test.)
- The longest unit goes first (longest-processing-time-first): with the short ones last, the workers end together
  instead of one idling while the other finishes a long test. A test's length is its time in the last run that
  recorded it (pytest's cache, `.pytest_cache`); else the module's figure in tests/durations.json (committed, for
  a fresh clone; `python -m tests.scheduling` rewrites it from the cache); else a `slow` test counts as long.

An explicit `--dist` other than the default `load` is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# A module -> the module whose worker it runs on: they share a session-scoped fixture (`trained`, one CLI training;
# `foreign`, the policies Stable-Baselines3 and CleanRL train for the import tests) or a package-scoped one
# (`shared_chromium`, the headless Chromium of the browser tests, tests/browser/conftest.py).
SAME_WORKER = {
    "tests/trainer/test_cli_exports.py": "tests/trainer/test_cli.py",
    "tests/models/test_imports.py": "tests/app/test_policy_imports.py",
    "tests/trainer/test_import_command.py": "tests/app/test_policy_imports.py",
    "tests/browser/test_api_docs.py": "tests/browser/test_dashboard.py",
    "tests/browser/test_experience_card.py": "tests/browser/test_dashboard.py",
    "tests/browser/test_learner_card.py": "tests/browser/test_dashboard.py",
    "tests/browser/test_models_dashboard.py": "tests/browser/test_dashboard.py",
    "tests/browser/test_sweeps_page.py": "tests/browser/test_dashboard.py",
}
DURATIONS_KEY = "ddpg/durations"
COMMITTED_DURATIONS = Path(__file__).with_name("durations.json")
# Seconds assumed for a test with no recorded time: `slow` ones start real processes or train.
UNKNOWN_SLOW_SECONDS = 20.0
UNKNOWN_SECONDS = 0.2


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or the module it must share a worker with."""
    module = nodeid.split("::", 1)[0]
    return SAME_WORKER.get(module, module)


def _unit_seconds(key: str, unit: list[pytest.Item], tests: dict[str, float], units: dict[str, float]) -> float:
    """The unit's tests' times from the last run that ran them all; else the committed figure for the unit."""
    known = [tests.get(item.nodeid) for item in unit]
    if all(seconds is not None for seconds in known):
        return sum(seconds for seconds in known if seconds is not None)
    if key in units:
        return units[key]
    return sum(UNKNOWN_SLOW_SECONDS if item.get_closest_marker("slow") else UNKNOWN_SECONDS for item in unit)


def longest_first(items: list[pytest.Item], tests: dict[str, float], units: dict[str, float]) -> list[pytest.Item]:
    """Units (their tests together, in their order), the longest unit first; ties keep their order."""
    grouped: dict[str, list[pytest.Item]] = {}
    for item in items:
        grouped.setdefault(unit_of(item.nodeid), []).append(item)
    ordered = sorted(grouped.items(), key=lambda pair: -_unit_seconds(pair[0], pair[1], tests, units))
    return [item for _, unit in ordered for item in unit]


def unit_totals(tests: dict[str, float]) -> dict[str, float]:
    """Seconds per unit of work, from seconds per test: what tests/durations.json holds."""
    totals: dict[str, float] = {}
    for nodeid, seconds in tests.items():
        totals[unit_of(nodeid)] = totals.get(unit_of(nodeid), 0.0) + seconds
    return {unit: round(seconds, 1) for unit, seconds in sorted(totals.items())}


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

    def _cached(self) -> dict[str, float]:
        cache = getattr(self.config, "cache", None)
        cached = cache.get(DURATIONS_KEY, {}) if cache is not None else {}
        return cached if isinstance(cached, dict) else {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # After pytest's own reordering by fixture scope. Every worker reads the same files, so every worker
        # collects the same order, which xdist requires.
        committed = json.loads(COMMITTED_DURATIONS.read_text()) if COMMITTED_DURATIONS.is_file() else {}
        items[:] = longest_first(items, self._cached(), committed)

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        return _module_scheduler(config, log) if config.getvalue("dist") == "load" else None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.times[report.nodeid] = self.times.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or hasattr(self.config, "workerinput") or not self.times:
            return  # workers report to the controller, which writes once
        cache.set(DURATIONS_KEY, {**self._cached(), **{nodeid: round(t, 2) for nodeid, t in self.times.items()}})


def register(config: pytest.Config) -> None:
    config.pluginmanager.register(Scheduling(config), "ddpg-test-scheduling")


if __name__ == "__main__":
    # Rewrite tests/durations.json from the times the last full run left in pytest's cache.
    cache_file = Path(__file__).parents[1] / ".pytest_cache" / "v" / DURATIONS_KEY
    COMMITTED_DURATIONS.write_text(json.dumps(unit_totals(json.loads(cache_file.read_text())), indent=0) + "\n")
