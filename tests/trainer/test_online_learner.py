"""The online learner in-process: a local loop acts like the service's sessions (random warm-up until the first
publish, then the latest published actor plus Gaussian noise), feeds the learner through the same TransitionSource
contract the database source implements, and the learner alone must learn the environment."""

from __future__ import annotations

import numpy as np
import pytest

from models.policy import NumpyActor
from models.training_config import make_config
from tests.reordered_pendulum import ReorderedPendulum, heldout_mean_return
from trainer.env import EnvSpec
from trainer.online.checkpoint import CheckpointFormatError
from trainer.online.learner import LearnerProgress, OnlineLearner
from trainer.online.source import InMemorySource, Transitions
from trainer.replay_buffer import ReplayBuffer

SPEC = EnvSpec(
    env_id="reordered-pendulum",
    obs_dim=3,
    act_dim=1,
    action_low=np.array([-1.0], np.float32),
    action_high=np.array([1.0], np.float32),
)
BLOCK = 50  # transitions per recorded block (the service flushes chunks of many steps)


class LocalActors:
    """The service's side of the loop, in-process: acts, records blocks, serves the latest published actor."""

    def __init__(self, source: InMemorySource, seed: int, sigma: float = 0.15) -> None:
        self.source = source
        self.env = ReorderedPendulum()
        self.rng = np.random.default_rng(seed)
        self.sigma = sigma
        self.actor: NumpyActor | None = None
        self.published: list[LearnerProgress] = []
        self.checkpoint: bytes | None = None
        self.steps = 0
        self._obs, _ = self.env.reset(seed=seed)

    def publish(self, actor: bytes, checkpoint: bytes, progress: LearnerProgress) -> None:
        self.actor = NumpyActor.from_bytes(actor)
        self.checkpoint = checkpoint
        self.published.append(progress)

    def record_block(self) -> None:
        rows: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, bool]] = []
        for _ in range(BLOCK):
            if self.actor is None:  # the warm-up: uniform within the bounds until the first publish
                action = self.rng.uniform(-1.0, 1.0, 1).astype(np.float32)
            else:
                mean = self.actor.act(self._obs[None])[0]
                action = np.clip(mean + self.sigma * self.rng.standard_normal(1), -1.0, 1.0).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            rows.append((self._obs, action, reward, next_obs, terminated))
            self.steps += 1
            self._obs = self.env.reset()[0] if terminated or truncated else next_obs
        obs, actions, rewards, next_obs, terminated = (np.array(column) for column in zip(*rows, strict=True))
        self.source.append(
            Transitions(
                obs.astype(np.float32),
                actions.astype(np.float32),
                rewards.astype(np.float32),
                next_obs.astype(np.float32),
                terminated.astype(np.bool_),
            )
        )


def test_learns_a_client_side_environment_from_recorded_transitions() -> None:
    config = make_config("default")
    source = InMemorySource(SPEC.obs_dim, SPEC.act_dim)
    actors = LocalActors(source, seed=1)
    learner = OnlineLearner(config, SPEC, source, actors.publish, publish_every=200)
    best = -np.inf
    while actors.steps < 40_000:
        actors.record_block()
        learner.read()
        learner.train(max_updates=10_000)
        if actors.steps % 2000 == 0 and actors.actor is not None:
            best = heldout_mean_return(actors.actor.act_one)
            if best >= -200:
                break
    assert best >= -200, f"held-out mean return {best:.1f} after {actors.steps} env steps"
    progress = learner.progress
    assert progress.transitions_consumed == actors.steps
    # Every consumed transition from learning_starts on paid for its update: the update-to-data ratio train() keeps,
    # and not one update more (none owed to the warm-up transitions before it).
    assert progress.updates == progress.transitions_consumed - config.learning_starts + 1
    assert progress.pending == 0


def test_a_resumed_learner_continues_from_its_checkpoint() -> None:
    config = make_config("default", learning_starts=300, batch_size=64)
    source = InMemorySource(SPEC.obs_dim, SPEC.act_dim)
    actors = LocalActors(source, seed=2)
    first = OnlineLearner(config, SPEC, source, actors.publish, publish_every=100)
    for _ in range(12):
        actors.record_block()
        first.step()
    assert actors.checkpoint is not None and first.publishes >= 2
    saved = actors.published[-1]
    # The process dies after its last publish; more is recorded meanwhile.
    for _ in range(3):
        actors.record_block()
    resumed = OnlineLearner(config, SPEC, source, actors.publish, publish_every=100, checkpoint=actors.checkpoint)
    assert (resumed.updates, resumed.cursor, resumed.publishes) == (saved.updates, saved.cursor, saved.publishes)
    # The actor is the last published one, and the replay holds what was recorded up to the cursor.
    assert actors.actor is not None
    published = actors.actor.weights.tensors
    for name, tensor in resumed.agent.actor_state().items():
        assert np.array_equal(tensor, published[name]), name
    assert len(resumed.buffer) == saved.cursor * BLOCK
    while resumed.step():
        pass
    assert resumed.transitions_consumed == actors.steps
    assert resumed.updates == config.updates_after(actors.steps)


def test_a_checkpoint_of_other_networks_is_refused() -> None:
    config = make_config("default")
    source = InMemorySource(SPEC.obs_dim, SPEC.act_dim)
    learner = OnlineLearner(config, SPEC, source, lambda *_: None, publish_every=1)
    other = OnlineLearner(make_config("default", hidden_size=8), SPEC, source, lambda *_: None, publish_every=1)
    with pytest.raises(CheckpointFormatError, match="does not fit"):
        OnlineLearner(config, SPEC, source, lambda *_: None, publish_every=1, checkpoint=other.checkpoint_bytes())
    with pytest.raises(CheckpointFormatError, match="not a"):
        OnlineLearner(config, SPEC, source, lambda *_: None, publish_every=1, checkpoint=b"\x00" * 16)
    assert learner.updates == 0


def test_add_batch_wraps_like_single_adds() -> None:
    rng = np.random.default_rng(0)
    one, many = ReplayBuffer(7, 2, 1), ReplayBuffer(7, 2, 1)
    for n in (3, 5, 11):
        obs, act = rng.normal(size=(n, 2)).astype(np.float32), rng.normal(size=(n, 1)).astype(np.float32)
        rew, term = rng.normal(size=n).astype(np.float32), rng.random(n) < 0.5
        for i in range(n):
            one.add(obs[i], act[i], float(rew[i]), obs[i], bool(term[i]))
        many.add_batch(obs, act, rew, obs, term)
        assert len(one) == len(many)
        for name in ("observations", "actions", "rewards", "next_observations", "terminated"):
            assert np.array_equal(getattr(one, name), getattr(many, name)), name
