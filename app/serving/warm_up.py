"""The warm-up: what a model with an online learner but no champion yet answers its sessions with.

Until the learner's first publish, session steps get uniformly random actions within the action bounds, the same
exploration DDPG starts from in a local loop. The warm-up is served as a policy whose id is WARM_UP_POLICY_ID (-1:
never a stored policy's, the recording's NO_POLICY) and whose own action is the bounds' midpoint (a zero network), so
a recorded warm-up step says what it was: policy_id -1, noise = the action minus the midpoint, noise_scale
WARM_UP_NOISE_SCALE (the whole half-range).
Warm-up episodes count towards no policy's live returns. A session keeps its warm-up until its episode ends, even
if a policy is published meanwhile (a session never switches policy mid-episode); one that moves to another API
process pins it with `policy_id` -1, as with any policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.policy import NumpyActor
from models.registry_vocabulary import CLIENT_ENV_PREFIX, WARM_UP_POLICY_ID
from models.weights import encode_actor

FloatArray = npt.NDArray[np.float32]
WARM_UP_NOISE_SCALE = 1.0


def warm_up_actor(name: str, spaces: dict[str, Any]) -> NumpyActor | None:
    """The warm-up of a model with these spaces; None when its action bounds are not finite (nothing to draw from)."""
    obs_dim, act_dim = int(spaces["obs_dim"]), int(spaces["act_dim"])
    low = np.asarray(spaces["action_low"], np.float32)
    high = np.asarray(spaces["action_high"], np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        return None
    zeros = {
        "linear1.weight": np.zeros((1, obs_dim), np.float32),
        "linear1.bias": np.zeros(1, np.float32),
        "linear2.weight": np.zeros((1, 1), np.float32),
        "linear2.bias": np.zeros(1, np.float32),
        "linear3.weight": np.zeros((act_dim, 1), np.float32),
        "linear3.bias": np.zeros(act_dim, np.float32),
    }
    data = encode_actor(
        zeros,
        env_id=f"{CLIENT_ENV_PREFIX}{name}",
        action_low=low,
        action_high=high,
        config={},
        seed=None,
        eval_mean_return=None,
        created_at="1970-01-01T00:00:00+00:00",
    )
    return NumpyActor.from_bytes(data)


def is_warm_up(policy_id: int) -> bool:
    return policy_id == WARM_UP_POLICY_ID


def uniform_action(actor: NumpyActor) -> tuple[list[float], FloatArray]:
    """A uniformly random action within the warm-up's bounds, and its offset from the midpoint (the recorded noise)."""
    weights = actor.weights
    low, high = weights.action_low, weights.action_high
    # Not a secret: numpy's global generator, as the exploration noise uses.
    action = np.random.uniform(low, high).astype(np.float32)
    return action.tolist(), (action - (low + high) / 2).astype(np.float32)
