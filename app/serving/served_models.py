"""What each model serves in this process, and the split of a canary rollout: pure, in memory, the same everywhere.

The policy cache (app.serving.policy_cache) builds one `ServedModel` per model from the registry snapshot each time
the registry version moves, and replaces its dict of them whole; a request reads it once and never waits on the
database.

The split. A canary sends `percent` of sessions to the challenger: the session id, hashed with the rollout's salt
(stored with the rollout), lands in one of 10,000 buckets, and buckets below percent x 100 go to the challenger.
Every API process has the same salt and the same function, so they all send a session to the same side, whichever
process its requests reach; raising the percentage only moves sessions from champion to challenger, never back. A
request without a session is routed on its own, by a fresh random draw.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from models.registry_vocabulary import SPLIT_BUCKETS
from models.reward_ranges import RewardRange

if TYPE_CHECKING:  # the cache builds these from its loaded policies: it imports this module, not the reverse
    from app.serving.policy_cache import LoadedPolicy
    from app.serving.recording_plan import RecordingPlan

Arm = Literal["champion", "challenger"]


@dataclass(frozen=True, slots=True)
class ActiveRollout:
    """A model's active rollout as this process routes it (its challenger loaded)."""

    rollout_id: int
    mode: str
    percent: float
    # percent in buckets of SPLIT_BUCKETS: sessions whose bucket is below it go to the challenger.
    threshold: int
    salt: bytes
    challenger: LoadedPolicy

    @classmethod
    def build(cls, rollout_id: int, mode: str, percent: float, salt: str, challenger: LoadedPolicy) -> ActiveRollout:
        threshold = round(percent * SPLIT_BUCKETS / 100)
        return cls(rollout_id, mode, percent, threshold, salt.encode(), challenger)

    @property
    def canary(self) -> bool:
        return self.mode == "canary"


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model as this process serves it: its champion and, during a trial, the rollout."""

    model_id: int
    name: str
    env_id: str | None  # None: the environment lives with the clients
    obs_dim: int
    act_dim: int
    champion: LoadedPolicy | None
    rollout: ActiveRollout | None
    # One step's declared reward range (models.reward_ranges), checked on every reward a session sends; None: none.
    reward_range: RewardRange | None = None
    # Recording its session steps, and exploring (app.serving.recording_plan); None: not recording.
    recording: RecordingPlan | None = None
    # An online learner runs for it (app.serving.warm_up): new sessions get this while there is no champion, and
    # sessions pinned to it keep it until their episode ends.
    warm_up: LoadedPolicy | None = None


def session_bucket(salt: bytes, session: str) -> int:
    """The session's bucket in [0, SPLIT_BUCKETS): keyed BLAKE2b, stable across processes, machines and restarts."""
    digest = hashlib.blake2b(session.encode(), key=salt, digest_size=8).digest()
    return int.from_bytes(digest, "big") % SPLIT_BUCKETS


def canary_arm(rollout: ActiveRollout, session: str | None) -> Arm:
    """Which side of a canary serves this session (or, without one, this request)."""
    bucket = random.randrange(SPLIT_BUCKETS) if session is None else session_bucket(rollout.salt, session)
    return "challenger" if bucket < rollout.threshold else "champion"


def choose(model: ServedModel, session: str | None) -> tuple[LoadedPolicy, Arm, int] | None:
    """The policy that starts serving this session (or request) now, its side, and the rollout it counts under
    (0 outside any); None when the model has no champion yet."""
    champion = model.champion
    if champion is None:
        return None
    rollout = model.rollout
    if rollout is None or not rollout.canary:
        return champion, "champion", 0 if rollout is None else rollout.rollout_id
    if canary_arm(rollout, session) == "challenger":
        return rollout.challenger, "challenger", rollout.rollout_id
    return champion, "champion", rollout.rollout_id
