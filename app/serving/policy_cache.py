"""The loaded policies of one API process, and the hot swap of the default one.

The database is the source of truth for which policy is the default (store.policies.get_serving_state).
A background task polls it every POLICY_REFRESH_SECONDS in a thread (so the event loop never blocks on the
database), and when the serving version changes it loads the new weights into a NumpyActor *before*
replacing the single `default` reference. /act reads that reference once per request, so a request either
uses the old actor or the new one, never a half-swapped state, and its response names the policy it used.
Because every process polls, a promotion reaches every uvicorn worker within one polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from models.policy import NumpyActor
from models.weights import WeightsFormatError

logger = logging.getLogger(__name__)

# (default_policy_id, version) from the database.
ReadServingState = Callable[[], tuple[int | None, int]]
# The stored weights of a policy, or None when there is no such policy.
ReadPolicyWeights = Callable[[int], bytes | None]


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """An actor ready to serve, tagged with the id of the stored policy it came from."""

    policy_id: int
    actor: NumpyActor


class PolicyUnavailableError(Exception):
    """The policy exists but could not be loaded (its stored weights are invalid)."""


class PolicyCache:
    """The default policy (hot-swapped) plus a small LRU of explicitly requested ones."""

    def __init__(self, read_state: ReadServingState, read_weights: ReadPolicyWeights, *, lru_size: int = 8) -> None:
        self._read_state = read_state
        self._read_weights = read_weights
        self._lru_size = lru_size
        self._lru: OrderedDict[int, LoadedPolicy] = OrderedDict()
        self._version: int | None = None
        self._failed_version: int | None = None
        self._refresh_lock = asyncio.Lock()
        # The one reference /act reads. Replaced whole, never mutated.
        self.default: LoadedPolicy | None = None
        self.database_ok = False
        self.last_error: str | None = None

    async def refresh(self) -> None:
        """Poll the serving state once and swap in the new default policy if it changed."""
        async with self._refresh_lock:
            try:
                policy_id, version = await asyncio.to_thread(self._read_state)
            except Exception as exc:
                if self.database_ok or self.last_error is None:
                    logger.warning("cannot read the serving state; keep serving the loaded policy: %s", exc)
                self.database_ok = False
                self.last_error = "database unreachable"
                return
            if not self.database_ok:
                logger.info("database reachable")
            self.database_ok = True
            self.last_error = None
            if version in (self._version, self._failed_version):
                return
            if policy_id is None:
                self._version = version
                return
            current = self.default
            if current is not None and current.policy_id == policy_id:
                self._version = version
                return
            try:
                loaded = await self._load(policy_id)
            except Exception as exc:
                # Keep serving the previous policy; try again only when the serving state changes again.
                self._failed_version = version
                logger.error("cannot load promoted policy %s; keep serving the previous one: %s", policy_id, exc)
                return
            if loaded is None:  # promoted then deleted: nothing to swap in
                self._failed_version = version
                return
            self.default = loaded
            self._version = version
            self._remember(loaded)
            logger.info("serving policy %s (serving version %s)", policy_id, version)

    async def run(self, interval: float) -> None:
        """Refresh forever (the lifespan starts this as a task and cancels it at shutdown)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # never let the refresher die: it is the only way promotions arrive
                logger.exception("policy refresh failed")
            await asyncio.sleep(interval)

    async def get(self, policy_id: int) -> LoadedPolicy | None:
        """A specific policy: the default or an LRU hit without waiting, else loaded from the database."""
        current = self.default
        if current is not None and current.policy_id == policy_id:
            return current
        hit = self._lru.get(policy_id)
        if hit is not None:
            self._lru.move_to_end(policy_id)
            return hit
        loaded = await self._load(policy_id)
        if loaded is not None:
            self._remember(loaded)
        return loaded

    async def _load(self, policy_id: int) -> LoadedPolicy | None:
        weights = await asyncio.to_thread(self._read_weights, policy_id)
        if weights is None:
            return None
        try:
            # Off the loop: decoding a large actor takes a while, and warm_up compiles the one-observation kernel
            # (~0.5 s) if the app's start-up has not already, which must not happen inside a request.
            actor = await asyncio.to_thread(_ready_actor, weights)
        except WeightsFormatError as exc:
            raise PolicyUnavailableError(f"policy {policy_id} has invalid stored weights: {exc}") from exc
        return LoadedPolicy(policy_id, actor)

    def _remember(self, loaded: LoadedPolicy) -> None:
        self._lru[loaded.policy_id] = loaded
        self._lru.move_to_end(loaded.policy_id)
        while len(self._lru) > self._lru_size:
            self._lru.popitem(last=False)


def _ready_actor(weights: bytes) -> NumpyActor:
    actor = NumpyActor.from_bytes(weights)
    actor.warm_up()
    return actor


@contextlib.asynccontextmanager
async def running_refresher(cache: PolicyCache, interval: float) -> AsyncIterator[None]:
    """Run the refresher task for the duration of the block (the app's lifespan)."""
    task = asyncio.create_task(cache.run(interval), name="policy-refresher")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
