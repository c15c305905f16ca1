"""The loaded policies of one API process: the hot swap of the default policy, and every model's serving state.

The database is the source of truth for what each model serves (store.registry: champion aliases and rollouts). A
background task polls the registry version every POLICY_REFRESH_SECONDS in a thread (so the event loop never
blocks on the database). When the version moves it loads every newly needed actor into a NumpyActor *before*
replacing any reference: the default model's champion (`default`) and the dict of every model (`models`). /act
reads a reference once per request, so a request either uses the old actor or the new one, never a half-swapped
state, and its response names the policy it used. Because every process polls, a promotion reaches every uvicorn
worker within one polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from app.infra.database import StoredPolicy
from app.serving.recording_plan import recording_plan
from app.serving.served_models import ActiveRollout, ServedModel
from app.serving.warm_up import warm_up_actor
from models.policy import NumpyActor
from models.registry_vocabulary import WARM_UP_POLICY_ID
from models.reward_ranges import stored_range
from models.weights import WeightsFormatError
from store.registry import ModelView, RegistrySnapshot

logger = logging.getLogger(__name__)

T = TypeVar("T")


# (default_policy_id, version) from the database.
ReadServingState = Callable[[], tuple[int | None, int]]
# The stored weights of a policy with its model, or None when there is no such policy.
ReadPolicyWeights = Callable[[int], StoredPolicy | None]
# Every model with its aliases and active rollout (store.registry.read_snapshot).
ReadRegistry = Callable[[], RegistrySnapshot]


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """An actor ready to serve, tagged with the id of the stored policy it came from (and its model's)."""

    policy_id: int
    actor: NumpyActor
    model_id: int | None = None


class PolicyUnavailableError(Exception):
    """The policy exists but could not be loaded (its stored weights are invalid)."""


class PolicyCache:
    """The default policy (hot-swapped), every model's serving state, and a small LRU of explicitly requested ones."""

    def __init__(
        self,
        read_state: ReadServingState,
        read_weights: ReadPolicyWeights,
        *,
        lru_size: int = 8,
        read_registry: ReadRegistry | None = None,
        default_model: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._read_state = read_state
        # The refresh's own threads (app.infra.control_threads), so that no client load delays a promotion; None:
        # asyncio's default executor. Loads a request asks for (an explicit policy_id) stay on the default one.
        self._executor = executor
        self._read_weights = read_weights
        self._read_registry = read_registry
        self._lru_size = lru_size
        self._lru: OrderedDict[int, LoadedPolicy] = OrderedDict()
        self._version: int | None = None
        self._failed_version: int | None = None
        self._registry_version: int | None = None
        self._refresh_lock = asyncio.Lock()
        self.default_model = default_model
        # The references /act reads. Replaced whole, never mutated.
        self.default: LoadedPolicy | None = None
        # The default policy when every request for it is answered by it alone (no canary on the default model): the
        # one reference a request without `model` or `session` reads; and the default model's shadow rollout, if any,
        # which only samples those answers for its challenger.
        self.unsplit_default: LoadedPolicy | None = None
        self.default_shadow: ActiveRollout | None = None
        self.models: dict[str, ServedModel] = {}
        # The policies the models serve, by id: an explicit policy_id of one of them never waits on the database.
        self._served: dict[int, LoadedPolicy] = {}
        self.database_ok = False
        self.last_error: str | None = None

    async def refresh(self) -> None:
        """Poll the registry version once; swap in whatever changed (the default policy, the models)."""
        async with self._refresh_lock:
            try:
                policy_id, version = await self._off_loop(self._read_state)
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
            default = await self._refresh_default(policy_id, version)
            if self._read_registry is not None and version != self._registry_version:
                await self._refresh_models()
            default_model = self.models.get(self.default_model) if self.default_model else None
            rollout = None if default_model is None else default_model.rollout
            # Together, with no await between: a request reads all three as of the same refresh, and /readyz (which
            # reads `default`) never says ready while /act (which reads `unsplit_default`) would still answer 503.
            self.default = default
            self.unsplit_default = default if rollout is None or not rollout.canary else None
            self.default_shadow = rollout if rollout is not None and not rollout.canary else None

    async def _refresh_default(self, policy_id: int | None, version: int) -> LoadedPolicy | None:
        """The default policy as of this serving state, loaded if it changed; `refresh` publishes it."""
        current = self.default
        if version in (self._version, self._failed_version):
            return current
        if policy_id is None or (current is not None and current.policy_id == policy_id):
            self._version = version
            return current
        try:
            # Also kept in the LRU, where the models' refresh finds it as the default model's champion.
            loaded = await self._get(policy_id, self._executor)
        except PolicyUnavailableError as exc:
            # Invalid stored weights will not get better: keep serving the previous policy until the state changes.
            self._failed_version = version
            logger.error("cannot load promoted policy %s; keep serving the previous one: %s", policy_id, exc)
            return current
        except Exception as exc:
            # A database hiccup while reading the weights: the next poll tries again.
            logger.warning("cannot load promoted policy %s yet (%s); retrying on the next poll", policy_id, exc)
            return current
        if loaded is None:  # promoted then deleted: nothing to swap in
            self._failed_version = version
            return current
        self._version = version
        logger.info("serving policy %s (serving version %s)", policy_id, version)
        return loaded

    async def _refresh_models(self) -> None:
        assert self._read_registry is not None
        try:
            snapshot = await self._off_loop(self._read_registry)
        except Exception as exc:
            logger.warning("cannot read the model registry; keep serving as before: %s", exc)
            return
        models: dict[str, ServedModel] = {}
        served: dict[int, LoadedPolicy] = {}
        for view in snapshot.models:
            model = await self._served_model(view)
            models[view.name] = model
            for loaded in (model.champion, model.rollout.challenger if model.rollout else None):
                if loaded is not None:
                    served[loaded.policy_id] = loaded
        self._served = served
        self.models = models
        self._registry_version = snapshot.version

    async def _served_model(self, view: ModelView) -> ServedModel:
        champion = await self._load_or_log(view.champion_id, view.name)
        rollout = None
        if view.rollout is not None:
            challenger = await self._load_or_log(view.rollout.challenger_id, view.name)
            if challenger is not None:
                spec = view.rollout
                rollout = ActiveRollout.build(spec.id, spec.mode, spec.percent, spec.salt, challenger)
        spaces = view.spaces
        return ServedModel(
            view.id,
            view.name,
            view.env_id,
            int(spaces["obs_dim"]),
            int(spaces["act_dim"]),
            champion,
            rollout,
            stored_range(spaces),
            recording_plan(view.experience, spaces),
            self._warm_up(view) if view.learning else None,
        )

    def _warm_up(self, view: ModelView) -> LoadedPolicy | None:
        actor = warm_up_actor(view.name, view.spaces)
        return None if actor is None else LoadedPolicy(WARM_UP_POLICY_ID, actor, view.id)

    async def _load_or_log(self, policy_id: int | None, model: str) -> LoadedPolicy | None:
        if policy_id is None:
            return None
        try:
            return await self._get(policy_id, self._executor)
        except Exception as exc:  # one broken policy must not stop the other models from refreshing
            logger.error("model %s: cannot load policy %s; it is not served: %s", model, policy_id, exc)
            return None

    async def run(self, interval: float) -> None:
        """Refresh forever (the lifespan starts this as a task and cancels it at shutdown)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # never let the refresher die: it is the only way promotions arrive
                logger.exception("policy refresh failed")
            await asyncio.sleep(interval)

    async def _off_loop(self, read: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    async def get(self, policy_id: int) -> LoadedPolicy | None:
        """A specific policy: a served or LRU one without waiting, else loaded from the database."""
        return await self._get(policy_id, None)

    async def _get(self, policy_id: int, executor: Executor | None) -> LoadedPolicy | None:
        current = self.default
        if current is not None and current.policy_id == policy_id:
            return current
        served = self._served.get(policy_id)
        if served is not None:
            return served
        hit = self._lru.get(policy_id)
        if hit is not None:
            self._lru.move_to_end(policy_id)
            return hit
        loaded = await self._load(policy_id, executor)
        if loaded is not None:
            self._remember(loaded)
        return loaded

    async def _load(self, policy_id: int, executor: Executor | None) -> LoadedPolicy | None:
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(executor, self._read_weights, policy_id)
        if stored is None:
            return None
        weights, model_id = stored
        try:
            # Off the loop: decoding a large actor takes a while, and warm_up compiles the one-observation kernel
            # (~0.5 s) if the app's start-up has not already, which must not happen inside a request.
            actor = await loop.run_in_executor(executor, _ready_actor, weights)
        except WeightsFormatError as exc:
            raise PolicyUnavailableError(f"policy {policy_id} has invalid stored weights: {exc}") from exc
        return LoadedPolicy(policy_id, actor, model_id)

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
