"""Where an online learner's transitions come from: "give me what was recorded after cursor X".

The learner never sees an environment. It reads transitions in the order they were recorded, each batch with the
cursor to ask from next; a cursor is opaque to the learner (the database source uses experience chunk ids). The
in-memory source is the same contract for in-process loops, tests and benchmarks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Transitions:
    """n transitions, actions in the environment's own bounds (as served), `terminated` without truncation."""

    observations: FloatArray  # (n, obs_dim)
    actions: FloatArray  # (n, act_dim), what the environment received
    rewards: FloatArray  # (n,)
    next_observations: FloatArray  # (n, obs_dim)
    terminated: BoolArray  # (n,) true termination only: a time-limit truncation still bootstraps

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @classmethod
    def empty(cls, obs_dim: int, act_dim: int) -> Transitions:
        return cls(
            np.zeros((0, obs_dim), np.float32),
            np.zeros((0, act_dim), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, obs_dim), np.float32),
            np.zeros(0, np.bool_),
        )

    @classmethod
    def concat(cls, parts: list[Transitions]) -> Transitions:
        return cls(
            np.concatenate([p.observations for p in parts]),
            np.concatenate([p.actions for p in parts]),
            np.concatenate([p.rewards for p in parts]),
            np.concatenate([p.next_observations for p in parts]),
            np.concatenate([p.terminated for p in parts]),
        )

    def newest(self, count: int) -> Transitions:
        """The last `count` transitions (all of them when there are fewer)."""
        start = max(0, len(self) - count)
        return Transitions(
            self.observations[start:],
            self.actions[start:],
            self.rewards[start:],
            self.next_observations[start:],
            self.terminated[start:],
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read returned: the transitions, the cursor to read after next, and how many recorded transitions
    are still newer than that cursor (the learner's lag)."""

    transitions: Transitions
    cursor: int
    pending: int


class TransitionSource(Protocol):
    """The learner's only view of the world."""

    def read_after(self, cursor: int, *, max_transitions: int) -> Batch:
        """Transitions recorded after `cursor`, oldest first, about `max_transitions` at most (whole recorded blocks:
        a block is never split, so the returned cursor is always a block boundary)."""
        ...

    def read_until(self, cursor: int, *, max_transitions: int) -> Transitions:
        """The newest transitions recorded up to `cursor` (inclusive), `max_transitions` at most, oldest first: what a
        resumed learner refills its replay buffer from before it reads on after `cursor`."""
        ...


class InMemorySource:
    """Blocks of transitions appended by a local loop; block i has cursor i + 1 (0: before everything). Thread-safe."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self._blocks: list[Transitions] = []
        self._lock = threading.Lock()

    def append(self, block: Transitions) -> None:
        with self._lock:
            self._blocks.append(block)

    def read_after(self, cursor: int, *, max_transitions: int) -> Batch:
        with self._lock:
            blocks = self._blocks[cursor:]
        taken: list[Transitions] = []
        count = 0
        for block in blocks:
            if taken and count + len(block) > max_transitions:
                break
            taken.append(block)
            count += len(block)
        pending = sum(len(block) for block in blocks) - count
        transitions = Transitions.concat(taken) if taken else Transitions.empty(self.obs_dim, self.act_dim)
        return Batch(transitions, cursor + len(taken), pending)

    def read_until(self, cursor: int, *, max_transitions: int) -> Transitions:
        with self._lock:
            blocks = self._blocks[:cursor]
        taken: list[Transitions] = []
        count = 0
        for block in reversed(blocks):
            if count >= max_transitions:
                break
            taken.append(block)
            count += len(block)
        if not taken:
            return Transitions.empty(self.obs_dim, self.act_dim)
        return Transitions.concat(list(reversed(taken))).newest(max_transitions)
