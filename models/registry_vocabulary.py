"""The model registry's vocabulary, defined once: model and alias names, the reserved aliases, rollout modes and
states, and the guard's defaults. The store's constraints, the API's schemas and the dashboard all read these.

A model is a named slot for one environment (`pendulum` for Pendulum-v1); its policies are its versions; aliases
name some of them. `champion` is what POST /act serves; `challenger` is the policy on trial in the model's active
rollout (it follows the rollout and cannot be set on its own); any other alias is free.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

# Lower-case slugs starting with a letter: never all digits, so a KServe/V2 `{name}` that is a number still means a
# policy id, and never `default`, which those protocols keep for the default model.
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
NAME_MAX_LENGTH = 64
RESERVED_MODEL_NAMES = frozenset({"default"})

# The model that existing data migrates into and that answers /act without a `model` (the DEFAULT_MODEL setting).
DEFAULT_MODEL_NAME = "pendulum"
DEFAULT_MODEL_ENV_ID = "Pendulum-v1"

CHAMPION = "champion"
CHALLENGER = "challenger"

RolloutMode = Literal["shadow", "canary"]
ROLLOUT_MODES: tuple[RolloutMode, ...] = get_args(RolloutMode)
RolloutStatus = Literal["active", "promoted", "rolled_back", "ended"]
ROLLOUT_STATUSES: tuple[RolloutStatus, ...] = get_args(RolloutStatus)

# A canary split works in basis points of the session hash space: percent 12.34 sends buckets 0..1233 of 10,000.
SPLIT_BUCKETS = 10_000
GUARD_MIN_EPISODES = 20
GUARD_MAX_REGRESSION = 50.0

# Where an online learner's policies go: `champion` serves every new session at once; `canary` makes each the
# challenger of a canary rollout, whose guard rolls it back or promotes it on live returns.
LearnerPublishMode = Literal["champion", "canary"]
LEARNER_PUBLISH_MODES: tuple[LearnerPublishMode, ...] = get_args(LearnerPublishMode)
# The learner's actor label in the weights' env_id for a model whose environment lives with its clients (no gymnasium
# id): `client/<model name>`, which no gymnasium registry resolves, so nothing tries to run it here.
CLIENT_ENV_PREFIX = "client/"
# The policy id the warm-up answers with (uniform random actions until a learner's first publish): no stored policy's,
# and the recorded experience's "no policy" (models.experience_chunks.NO_POLICY).
WARM_UP_POLICY_ID = -1

# Session ids are a client's episode ids: printable, bounded, so a session table entry stays small.
SESSION_MAX_LENGTH = 128


def check_name(value: str, what: str = "name") -> str:
    """The name itself, or ValueError saying what a valid one looks like."""
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} must be 1 to {NAME_MAX_LENGTH} characters of a-z, 0-9, '_' and '-', starting with a letter, "
            f"got {value!r}"
        )
    return value


def slug_for_env(env_id: str) -> str:
    """A model name for an environment id (`MountainCarContinuous-v0` -> `mountaincarcontinuous-v0`)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", env_id.lower()).strip("-_")
    if not slug or not slug[0].isalpha():
        slug = f"env-{slug}"
    return slug[:NAME_MAX_LENGTH]
