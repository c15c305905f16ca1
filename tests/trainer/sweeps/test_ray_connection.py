"""A local Ray that fails to start (its raylet missed Ray's fixed start-up window on a busy machine) is cleaned up and
started again before the sweep is given up on; one that never starts still fails the sweep, with Ray's error."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from trainer.sweeps import ray_connection
from trainer.sweeps.ray_connection import LOOPBACK, RayConnection


class FakeRay(types.ModuleType):
    """Stands in for `ray` in sys.modules: its init fails `failures` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        super().__init__("ray")
        self.failures = failures
        self.calls: list[str] = []
        self.initialized = False
        self.util = types.SimpleNamespace(get_node_ip_address=lambda: LOOPBACK)

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **_options: Any) -> None:
        self.calls.append("init")
        if self.failures:
            self.failures -= 1
            raise Exception("The current node timed out during startup.")  # what Ray raises
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.initialized = False


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_connection, "START_RETRY_SECONDS", 0.0)
    # connect() sets this for the Ray it starts; through monkeypatch, so that it is undone for the tests after.
    monkeypatch.setenv(ray_connection.RAY_CLUSTER_SWITCH_ENV, "0")


def test_a_failed_local_start_is_cleaned_up_and_tried_again(monkeypatch: pytest.MonkeyPatch, no_waiting: None) -> None:
    fake = FakeRay(failures=2)
    monkeypatch.setitem(sys.modules, "ray", fake)
    RayConnection(None, num_cpus=1, idle_shutdown_seconds=60).connect()
    assert fake.calls == ["init", "shutdown", "init", "shutdown", "init"]
    assert fake.initialized


def test_a_local_ray_that_never_starts_fails_with_rays_error(monkeypatch: pytest.MonkeyPatch, no_waiting: None) -> None:
    fake = FakeRay(failures=ray_connection.START_ATTEMPTS)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(Exception, match="timed out during startup"):
        RayConnection(None, num_cpus=1, idle_shutdown_seconds=60).connect()
    assert fake.calls.count("init") == ray_connection.START_ATTEMPTS and not fake.initialized
