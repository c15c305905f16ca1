"""How `make test` shares the tests between its two xdist workers (`--dist loadgroup --no-loadscope-reorder`).

Two rules, both about wall time on a 2-core machine, neither about what a test checks:

- Tests that share something expensive run on one worker, so it is set up once rather than once per worker: every
  module with a module-scoped fixture (a server, a Ray cluster) is one xdist group, and so are the modules that
  share a session-scoped fixture named in SHARED_SESSION_FIXTURES.
- The longest work goes first (longest-processing-time-first): with the short tests last, the two workers end
  together instead of one idling while the other finishes a long test. A test's length is its total time in the
  last run that recorded it (kept in pytest's cache, `.pytest_cache`); without one, `slow` tests count as long.
"""

from __future__ import annotations

import pytest

# A session-scoped fixture that several modules use -> the group their modules share.
SHARED_SESSION_FIXTURES = {"trained": "trained-cli-run"}
GROUP_PREFIX = "shared-"
DURATIONS_KEY = "ddpg/durations"
# Seconds assumed for a test with no recorded time: `slow` ones start real processes or train.
UNKNOWN_SLOW_SECONDS = 20.0
UNKNOWN_SECONDS = 0.2
DURATIONS = pytest.StashKey[dict[str, float]]()


def _base_id(nodeid: str) -> str:
    """The test id without the `@group` suffix xdist appends under `--dist loadgroup`."""
    head, _, tail = nodeid.rpartition("@")
    return head if head and tail.startswith(GROUP_PREFIX) else nodeid


def _group_of_module(items: list[pytest.Item]) -> str | None:
    shared = None
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for name in info.names_closure:
            definitions = info.name2fixturedefs.get(name)
            if not definitions:
                continue
            if name in SHARED_SESSION_FIXTURES:
                return GROUP_PREFIX + SHARED_SESSION_FIXTURES[name]
            if definitions[-1].scope in ("module", "class", "package"):
                shared = GROUP_PREFIX + items[0].nodeid.split("::", 1)[0].replace("/", ".")
    return shared


class Grouping:
    """Marks the groups before xdist reads the marks (in its own hook, which runs after this one)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        mark_groups(items)


def mark_groups(items: list[pytest.Item]) -> None:
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    for module_items in modules.values():
        group = _group_of_module(module_items)
        if group is not None:
            for item in module_items:
                item.add_marker(pytest.mark.xdist_group(group))


def _expected_seconds(item: pytest.Item, recorded: dict[str, float]) -> float:
    known = recorded.get(_base_id(item.nodeid))
    if known is not None:
        return known
    return UNKNOWN_SLOW_SECONDS if item.get_closest_marker("slow") else UNKNOWN_SECONDS


def longest_first(items: list[pytest.Item], recorded: dict[str, float]) -> list[pytest.Item]:
    """Units (a group's tests together, in their order; or one test), the longest unit first; ties keep order."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        key = f"group:{mark.args[0]}" if mark and mark.args else f"test:{item.nodeid}"
        units.setdefault(key, []).append(item)
    ordered = sorted(units.values(), key=lambda unit: -sum(_expected_seconds(item, recorded) for item in unit))
    return [item for unit in ordered for item in unit]


class Scheduling:
    """Orders the collected tests (in every worker alike) and records each test's time (in the controller)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.times: dict[str, float] = {}

    def _recorded(self) -> dict[str, float]:
        cache = getattr(self.config, "cache", None)
        if cache is None:
            return {}
        recorded = cache.get(DURATIONS_KEY, {})
        return recorded if isinstance(recorded, dict) else {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # After pytest's own reordering by fixture scope; the same cache file gives every worker the same order,
        # which xdist requires.
        items[:] = longest_first(items, self._recorded())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = _base_id(report.nodeid)
        self.times[key] = self.times.get(key, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or hasattr(self.config, "workerinput") or not self.times:
            return  # workers report to the controller, which writes once
        cache.set(DURATIONS_KEY, {**self._recorded(), **{k: round(v, 2) for k, v in self.times.items()}})


def register(config: pytest.Config) -> None:
    config.pluginmanager.register(Grouping(), "ddpg-test-grouping")
    config.pluginmanager.register(Scheduling(config), "ddpg-test-scheduling")
