"""A torch Actor and the NumpyActor loaded from its exported bytes, for parity tests."""

import numpy as np
import torch

from models.networks import Actor
from models.policy import NumpyActor
from models.weights import encode_actor


def torch_and_numpy_actor(
    obs_dim: int, hidden: int, act_dim: int, seed: int, low: np.ndarray, high: np.ndarray
) -> tuple[Actor, NumpyActor]:
    torch.manual_seed(seed)
    actor = Actor(obs_dim, hidden, act_dim)
    # Weights well beyond the default init, so the tanh is exercised away from its linear region (and saturates
    # for some inputs).
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(3.0)
    data = encode_actor(
        {k: v.detach().numpy() for k, v in actor.state_dict().items()},
        env_id="Test-v0",
        action_low=low,
        action_high=high,
        config={},
        seed=seed,
        eval_mean_return=None,
        created_at="2024-01-01T00:00:00+00:00",
    )
    return actor, NumpyActor.from_bytes(data)
