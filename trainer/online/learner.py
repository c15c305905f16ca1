"""DDPG that learns from transitions recorded elsewhere: the learner of Ape-X DDPG / D4PG, whose actors are the
service's client sessions.

One round (`step`): read what was recorded since the cursor into the replay buffer, then run the gradient updates
that are due, as many as the local loop runs after as many environment steps (`1 / update_every` per transition
from `learning_starts` on: the update-to-data ratio train() keeps). When the actors record faster than this process
can update, the learner falls behind rather than piling up work: the achieved ratio is reported, never faked. Every
`publish_every` updates the actor is exported (the served `ddpg-actor/1` bytes) and handed to `publish` together
with a checkpoint of the whole learner, so whoever stores the policy stores the state to resume from in the same
write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models.training_config import TrainingConfig
from trainer.agent import DDPGAgent
from trainer.env import EnvSpec
from trainer.export import export_actor
from trainer.online.checkpoint import CheckpointState, encode_checkpoint, restore_checkpoint
from trainer.online.source import Transitions, TransitionSource
from trainer.replay_buffer import ReplayBuffer
from trainer.seeding import seed_everything

logger = logging.getLogger(__name__)

# Transitions read per round at most: bounds one round's memory and keeps updates interleaved with reads.
READ_BATCH = 4096
# Updates per round at most: a round stays short, so a stop request or a lost lease is noticed within it.
UPDATES_PER_ROUND = 250


@dataclass(frozen=True, slots=True)
class LearnerProgress:
    """What the learner has done, as its state shows it."""

    transitions_consumed: int
    updates: int
    cursor: int
    pending: int  # recorded transitions newer than the cursor: how far behind the newest recorded step
    publishes: int

    @property
    def update_to_data(self) -> float:
        """Achieved gradient updates per consumed transition."""
        return self.updates / self.transitions_consumed if self.transitions_consumed else 0.0


# publish(actor bytes, checkpoint bytes, progress): store the policy and the checkpoint (one write, ideally).
Publish = Callable[[bytes, bytes, LearnerProgress], None]


class OnlineLearner:
    """DDPGAgent + ReplayBuffer fed from a TransitionSource; `step` until stopped."""

    def __init__(
        self,
        config: TrainingConfig,
        spec: EnvSpec,
        source: TransitionSource,
        publish: Publish,
        *,
        publish_every: int,
        checkpoint: bytes | None = None,
    ) -> None:
        if publish_every < 1:
            raise ValueError(f"publish_every must be >= 1, got {publish_every}")
        torch.set_num_threads(1)  # as trainer.training: small matmuls, a shared machine
        self.config = config
        self.spec = spec
        self.source = source
        self.publish_every = publish_every
        self._publish = publish
        self.rng = seed_everything(config.seed)
        self.agent = DDPGAgent.from_config(config, spec.obs_dim, spec.act_dim)
        self.buffer = ReplayBuffer(config.replay_size, spec.obs_dim, spec.act_dim)
        self._half_range = (spec.action_high - spec.action_low) / 2
        self._mid = (spec.action_high + spec.action_low) / 2
        self.transitions_consumed = 0
        self.updates = 0
        self.cursor = 0
        self.pending = 0
        self.publishes = 0
        if checkpoint is not None:
            self._resume(checkpoint)

    @property
    def progress(self) -> LearnerProgress:
        return LearnerProgress(self.transitions_consumed, self.updates, self.cursor, self.pending, self.publishes)

    def _resume(self, checkpoint: bytes) -> None:
        """Networks, optimisers and counters from the checkpoint; the replay buffer from the newest recorded
        transitions (the experience itself is the database's, so the checkpoint need not carry it)."""
        state = restore_checkpoint(self.agent, checkpoint)
        self.rng.bit_generator.state = state.rng_state
        self.transitions_consumed, self.updates = state.transitions_consumed, state.updates
        self.publishes = state.publishes
        self.cursor = state.cursor
        refill = self.source.read_until(self.cursor, max_transitions=self.config.replay_size)
        self._add(refill)
        logger.info(
            "resumed after %d updates and %d publishes; replay refilled with %d recorded transitions",
            self.updates,
            self.publishes,
            len(refill),
        )

    def step(self) -> bool:
        """One round: read, then run the due updates (publishing on the way). Returns whether anything was done."""
        read = self.read()
        trained = self.train(UPDATES_PER_ROUND)
        return read > 0 or trained > 0

    def read(self, max_transitions: int = READ_BATCH) -> int:
        batch = self.source.read_after(self.cursor, max_transitions=max_transitions)
        self._add(batch.transitions)
        self.transitions_consumed += len(batch.transitions)
        self.cursor, self.pending = batch.cursor, batch.pending
        return len(batch.transitions)

    def _add(self, transitions: Transitions) -> None:
        # The recorded action is the environment's; the critic learns on the actor's [-1, 1] scale.
        squashed = np.clip((transitions.actions - self._mid) / self._half_range, -1.0, 1.0).astype(np.float32)
        self.buffer.add_batch(
            transitions.observations,
            squashed,
            transitions.rewards,
            transitions.next_observations,
            transitions.terminated,
        )

    def due_updates(self) -> int:
        """Updates owed to the data consumed so far: as many as train() has run after as many environment steps
        (`TrainingConfig.updates_after`). Not one per consumed transition from the start: that owed the
        `learning_starts` warm-up transitions a burst of as many extra updates on the random data alone, which
        train() never runs (500 of them with the default preset: a quarter of the updates a run needed to -200)."""
        if len(self.buffer) < self.config.batch_size:
            return 0
        return max(0, self.config.updates_after(self.transitions_consumed) - self.updates)

    def train(self, max_updates: int) -> int:
        """Run up to `max_updates` of the due updates; publish at every `publish_every`-th. Returns how many ran."""
        todo = min(self.due_updates(), max_updates)
        for _ in range(todo):
            self.agent.update(self.buffer.sample(self.config.batch_size, self.rng))
            self.updates += 1
            if self.updates % self.publish_every == 0:
                self.publish_now()
        return todo

    def actor_bytes(self) -> bytes:
        return export_actor(self.agent.actor_state(), spec=self.spec, config=self.config, eval_mean_return=None)

    def checkpoint_bytes(self) -> bytes:
        state = CheckpointState(
            transitions_consumed=self.transitions_consumed,
            updates=self.updates,
            cursor=self.cursor,
            publishes=self.publishes,
            rng_state=dict(self.rng.bit_generator.state),
        )
        return encode_checkpoint(self.agent, state)

    def publish_now(self) -> None:
        self.publishes += 1
        self._publish(self.actor_bytes(), self.checkpoint_bytes(), self.progress)
