"""A replay buffer of preallocated numpy arrays (a ring: the oldest transitions are overwritten)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class ReplaySamples(NamedTuple):
    """A batch of transitions; every array has a leading batch dimension, scalars are (batch, 1)."""

    observations: FloatArray
    actions: FloatArray
    rewards: FloatArray
    next_observations: FloatArray
    terminated: FloatArray  # 1.0 where the episode truly ended (no bootstrap); 0.0 also for time-limit truncation


class ReplayBuffer:
    """Fixed-capacity transition storage. Actions are stored in the actor's [-1, 1] space."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        # One allocation up front: appending costs five row writes and never grows memory.
        self.observations = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        # Rewards and flags are kept (capacity, 1) so samples broadcast against (batch, 1) Q values as is.
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.next_observations = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros((capacity, 1), dtype=np.float32)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(
        self,
        observation: npt.ArrayLike,
        action: npt.ArrayLike,
        reward: float,
        next_observation: npt.ArrayLike,
        terminated: bool,
    ) -> None:
        """Store one transition. Pass gymnasium's `terminated`, never `terminated or truncated`."""
        i = self._next
        self.observations[i] = observation
        self.actions[i] = action
        self.rewards[i, 0] = reward
        self.next_observations[i] = next_observation
        self.terminated[i, 0] = float(terminated)
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def add_batch(
        self,
        observations: npt.ArrayLike,
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        next_observations: npt.ArrayLike,
        terminated: npt.ArrayLike,
    ) -> None:
        """Store n transitions at once (rows as in `add`), oldest first; the ring wraps as n single adds would."""
        rewards_1d = np.asarray(rewards, dtype=np.float32).reshape(-1)
        n = rewards_1d.shape[0]
        if n == 0:
            return
        # Only the newest `capacity` rows can survive; writing more would overwrite them within this call anyway.
        keep = min(n, self.capacity)
        rows = (self._next + np.arange(n - keep, n)) % self.capacity
        self.observations[rows] = np.asarray(observations, dtype=np.float32)[n - keep :]
        self.actions[rows] = np.asarray(actions, dtype=np.float32)[n - keep :]
        self.rewards[rows, 0] = rewards_1d[n - keep :]
        self.next_observations[rows] = np.asarray(next_observations, dtype=np.float32)[n - keep :]
        self.terminated[rows, 0] = np.asarray(terminated, dtype=np.float32).reshape(-1)[n - keep :]
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplaySamples:
        """Uniformly sample `batch_size` stored transitions (with replacement, as SB3 and CleanRL do)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self._size, size=batch_size)
        return ReplaySamples(
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_observations=self.next_observations[idx],
            terminated=self.terminated[idx],
        )
