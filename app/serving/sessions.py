"""Live sessions of one API process: a client's episode, pinned to the policy it started with, and its return.

A session is pinned when its first request arrives (or its first after `done`): the policy chosen then serves every
step until the episode ends, whatever is promoted, rolled back or re-split meanwhile. Each `reward` adds to the
session's return; `done` hands the finished return to app.serving.live_returns and unpins the session, so its
next request starts a new episode under whatever serves then.

Bounded: sessions idle longer than SESSION_IDLE_SECONDS are dropped by a sweep, and beyond MAX_SESSIONS the least
recently used one is dropped to admit a new one. A dropped session loses its unfinished episode (never counted);
the metrics say how many were dropped and why. An OrderedDict kept in recency order makes both O(1) per session.
Event-loop only: nothing here is locked.

While its model records (app.serving.experience), a session also holds its last served step until the next request
completes it; a session dropped or ended with such a step calls `on_drop`, which counts the lost transition.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.infra.loop_metrics import LoopCounter

if TYPE_CHECKING:
    from app.serving.experience import PendingStep
    from app.serving.policy_cache import LoadedPolicy

logger = logging.getLogger(__name__)

SessionKey = tuple[str, str]  # (model name, session id)


class LiveSession:
    """One client episode in progress."""

    __slots__ = (
        "episode",
        "episode_return",
        "explore_plan",
        "explored",
        "explores",
        "last_seen",
        "model_id",
        "pending",
        "policy",
        "rollout_id",
        "steps",
    )

    def __init__(self, policy: LoadedPolicy, rollout_id: int, now: float, model_id: int = 0) -> None:
        self.policy = policy
        self.rollout_id = rollout_id
        self.model_id = model_id
        self.episode_return = 0.0
        self.steps = 0
        self.last_seen = now
        # The recorded episode's id: random, so two processes never number two episodes of a session alike.
        self.episode = random.getrandbits(63)  # an identifier, not a secret
        # The served step awaiting its next observation while the model records; whether any step explored.
        self.pending: PendingStep | None = None
        self.explored = False
        # Whether this session explores under `explore_plan` (a keyed hash of its id): worked out once per plan.
        self.explore_plan: object | None = None
        self.explores = False


# Called with a session dropped or ended while it held a step (its transition is lost).
OnDrop = Callable[[SessionKey, LiveSession], None]


class SessionTable:
    """The sessions of this process, least recently used first."""

    def __init__(
        self, *, idle_seconds: float, max_sessions: int, dropped: LoopCounter, on_drop: OnDrop | None = None
    ) -> None:
        self.on_drop = on_drop
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[SessionKey, LiveSession] = OrderedDict()
        self._expired = dropped.labels("expired")
        self._evicted = dropped.labels("evicted")

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: SessionKey) -> LiveSession | None:
        """The session in progress, marked as just used; None when there is none (new, ended, dropped)."""
        session = self._sessions.get(key)
        if session is not None:
            session.last_seen = time.monotonic()
            self._sessions.move_to_end(key)
        return session

    def start(self, key: SessionKey, policy: LoadedPolicy, rollout_id: int, model_id: int = 0) -> LiveSession:
        """Pin a new episode of `key` to `policy`; the least recently used session makes room when full."""
        session = LiveSession(policy, rollout_id, time.monotonic(), model_id)
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.max_sessions:
            self._dropped(*self._sessions.popitem(last=False))
            self._evicted.inc()
        return session

    def end(self, key: SessionKey) -> None:
        """The episode is over: the next request of this session starts a new one."""
        session = self._sessions.pop(key, None)
        if session is not None:
            self._dropped(key, session)

    def _dropped(self, key: SessionKey, session: LiveSession) -> None:
        if session.pending is not None and self.on_drop is not None:
            self.on_drop(key, session)

    def expire(self, now: float | None = None) -> int:
        """Drop the sessions idle longer than idle_seconds; returns how many."""
        deadline = (time.monotonic() if now is None else now) - self.idle_seconds
        dropped = 0
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.last_seen > deadline:
                break
            del self._sessions[key]
            self._dropped(key, session)
            dropped += 1
        if dropped:
            self._expired.inc(dropped)
        return dropped

    async def run_expiry(self, interval: float) -> None:
        """Expire idle sessions every `interval` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(interval)
            dropped = self.expire()
            if dropped:
                logger.debug("dropped %d idle sessions", dropped)
