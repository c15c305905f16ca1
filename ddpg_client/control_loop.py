"""Episodes run locally on actions from the service's POST /act: the control loop of the `rollout` command."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ddpg_client.clients import PolicyClient
from episodes import iter_episodes


@dataclass(frozen=True)
class EpisodeOutcome:
    """One episode: its number, its reset seed, its return and length, and the policies that chose its actions."""

    episode: int
    seed: int
    episode_return: float
    steps: int
    policy_ids: frozenset[int]


def run_remote_episodes(
    client: PolicyClient,
    *,
    episodes: int,
    seed: int = 0,
    env_id: str = "Pendulum-v1",
    max_steps: int | None = None,
    policy_id: int | None = None,
) -> Iterator[EpisodeOutcome]:
    """Run episodes locally, every action from POST /act; yields each episode's outcome as it ends.

    Episode i is reset with seed `seed + i`, so a run is reproducible for a given policy. Without `policy_id`
    each action comes from whatever is the default at that moment, so a promotion mid-run shows up in
    `policy_ids`. Needs gymnasium (`pip install ./ddpg_client[rollout]`); it is imported only when an episode starts.
    """
    used: set[int] = set()

    def remote_policy(observation: npt.NDArray[np.float32]) -> list[float]:
        result = client.act(observation, policy_id=policy_id)
        used.add(result.policy_id)
        return result.action

    # One episode at a time (not batched): the results stream out as each episode ends, and `used` holds
    # exactly the policies of the episode just yielded.
    results = iter_episodes(remote_policy, env_id, range(seed, seed + episodes), max_steps)
    for index, result in enumerate(results):
        yield EpisodeOutcome(index, result.seed, result.episode_return, result.steps, frozenset(used))
        used.clear()
