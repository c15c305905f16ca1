"""PolicyCache against an in-memory stand-in for the database: swaps, failures, and the LRU."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from app.infra.database import StoredPolicy
from app.serving.policy_cache import PolicyCache
from store.registry import RegistrySnapshot
from tests.app.factories import make_policy_bytes


class FakeStore:
    def __init__(self) -> None:
        self.weights: dict[int, bytes] = {}
        self.state: tuple[int | None, int] = (None, 0)
        self.down = False
        self.weight_reads = 0

    def read_state(self) -> tuple[int | None, int]:
        if self.down:
            raise ConnectionError("database is down")
        return self.state

    def read_weights(self, policy_id: int) -> StoredPolicy | None:
        if self.down:
            raise ConnectionError("database is down")
        self.weight_reads += 1
        weights = self.weights.get(policy_id)
        return None if weights is None else StoredPolicy(weights, None)

    def promote(self, policy_id: int) -> None:
        self.state = (policy_id, self.state[1] + 1)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_refresh_swaps_in_the_promoted_policy_and_keeps_it_until_the_next_promotion() -> None:
    store = FakeStore()
    store.weights = {1: make_policy_bytes(1), 2: make_policy_bytes(2)}
    cache = PolicyCache(store.read_state, store.read_weights)

    async def scenario() -> None:
        await cache.refresh()
        assert cache.default is None and cache.database_ok
        store.promote(1)
        await cache.refresh()
        assert cache.default is not None and cache.default.policy_id == 1
        first = cache.default
        reads = store.weight_reads
        await cache.refresh()  # same version: nothing reloaded
        assert cache.default is first and store.weight_reads == reads
        store.promote(2)
        await cache.refresh()
        assert cache.default is not None and cache.default.policy_id == 2
        obs = np.zeros(3, dtype=np.float32)
        assert not np.allclose(first.actor.act(obs), cache.default.actor.act(obs))

    run(scenario())


def test_a_policy_that_cannot_be_loaded_leaves_the_previous_one_serving() -> None:
    store = FakeStore()
    store.weights = {1: make_policy_bytes(1), 2: b"definitely not safetensors"}
    cache = PolicyCache(store.read_state, store.read_weights)

    async def scenario() -> None:
        store.promote(1)
        await cache.refresh()
        store.promote(2)
        await cache.refresh()
        assert cache.default is not None and cache.default.policy_id == 1
        reads = store.weight_reads
        await cache.refresh()  # the broken version is not retried on every poll
        assert store.weight_reads == reads
        store.weights[3] = make_policy_bytes(3)
        store.promote(3)
        await cache.refresh()
        assert cache.default is not None and cache.default.policy_id == 3

    run(scenario())


def test_database_outage_keeps_serving_and_is_reported() -> None:
    store = FakeStore()
    store.weights = {1: make_policy_bytes(1)}
    cache = PolicyCache(store.read_state, store.read_weights)

    async def scenario() -> None:
        store.promote(1)
        await cache.refresh()
        store.down = True
        await cache.refresh()
        assert not cache.database_ok and cache.last_error
        assert cache.default is not None and cache.default.policy_id == 1
        store.down = False
        await cache.refresh()
        assert cache.database_ok

    run(scenario())


def test_explicit_policies_come_from_a_bounded_lru() -> None:
    store = FakeStore()
    store.weights = {i: make_policy_bytes(i) for i in range(1, 5)}
    cache = PolicyCache(store.read_state, store.read_weights, lru_size=2)

    async def scenario() -> None:
        assert await cache.get(99) is None
        one = await cache.get(1)
        assert one is not None and one.policy_id == 1
        reads = store.weight_reads
        assert await cache.get(1) is one and store.weight_reads == reads  # hit
        await cache.get(2)
        await cache.get(3)  # evicts 1, the least recently used
        reads = store.weight_reads
        again = await cache.get(1)
        assert again is not None and again is not one and store.weight_reads == reads + 1

    run(scenario())


def test_the_refresher_task_picks_up_promotions_by_itself() -> None:
    store = FakeStore()
    store.weights = {1: make_policy_bytes(1)}
    cache = PolicyCache(store.read_state, store.read_weights)

    async def scenario() -> None:
        task = asyncio.create_task(cache.run(0.01))
        store.promote(1)
        for _ in range(500):  # a bound on waiting, not a timing assertion
            if cache.default is not None:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        assert cache.default is not None and cache.default.policy_id == 1

    run(scenario())


def test_a_promotion_is_published_to_readiness_and_to_act_at_once() -> None:
    """/readyz reads `default`, a plain POST /act reads `unsplit_default`: while the refresh still reads the
    registry after loading the new policy, neither may show it yet, or readiness says ready while /act answers 503."""
    store = FakeStore()
    store.weights = {1: make_policy_bytes(1)}
    reading, release = threading.Event(), threading.Event()

    def read_registry() -> RegistrySnapshot:
        reading.set()
        assert release.wait(10)
        return RegistrySnapshot(store.state[1], ())

    cache = PolicyCache(store.read_state, store.read_weights, read_registry=read_registry, default_model="pendulum")

    async def scenario() -> None:
        store.promote(1)
        refreshing = asyncio.create_task(cache.refresh())
        try:
            assert await asyncio.to_thread(reading.wait, 10)
            assert (cache.default, cache.unsplit_default) == (None, None)
        finally:
            release.set()
        await refreshing
        assert cache.default is not None and cache.default.policy_id == 1
        assert cache.unsplit_default is cache.default

    run(scenario())
