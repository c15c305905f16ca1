import numpy as np
import pytest

import trainer.training
from models.training_config import make_config
from models.weights import decode_actor
from trainer.env import EnvSpec, env_spec, make_env
from trainer.training import train


def test_scale_action_maps_unit_range_onto_the_bounds() -> None:
    spec = EnvSpec("X", 3, 2, np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32))
    np.testing.assert_allclose(spec.scale_action(np.array([-1.0, -1.0], dtype=np.float32)), [-2.0, 0.0])
    np.testing.assert_allclose(spec.scale_action(np.array([1.0, 1.0], dtype=np.float32)), [2.0, 1.0])
    np.testing.assert_allclose(spec.scale_action(np.array([0.0, 0.5], dtype=np.float32)), [0.0, 0.75])


def test_spec_reads_sizes_and_bounds_from_the_env() -> None:
    spec = env_spec(make_env("MountainCarContinuous-v0"), "MountainCarContinuous-v0")
    assert (spec.obs_dim, spec.act_dim) == (2, 1)
    np.testing.assert_array_equal(spec.action_low, [-1.0])


def test_discrete_action_envs_are_refused() -> None:
    with pytest.raises(ValueError, match="continuous"):
        make_env("CartPole-v1")


def test_trains_on_another_env_without_pendulum_assumptions() -> None:
    config = make_config(
        env_id="MountainCarContinuous-v0", episodes=2, max_episode_steps=40, hidden_size=8, batch_size=16,
        learning_starts=20, random_steps=10, eval_episodes=1,
    )  # fmt: skip
    weights = decode_actor(train(config).actor_bytes)
    assert (weights.obs_dim, weights.act_dim, weights.env_id) == (2, 1, "MountainCarContinuous-v0")


def test_loop_stores_unit_actions_and_never_marks_truncation_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pendulum never terminates, it only truncates: every stored transition must keep bootstrapping,
    and every stored action must be in the actor's [-1, 1] space, not the env's [-2, 2]."""
    stored: list[tuple[np.ndarray, bool]] = []
    original_add = trainer.training.ReplayBuffer.add

    def spy(self, observation, action, reward, next_observation, terminated):  # type: ignore[no-untyped-def]
        stored.append((np.array(action), terminated))
        original_add(self, observation, action, reward, next_observation, terminated)

    monkeypatch.setattr(trainer.training.ReplayBuffer, "add", spy)
    config = make_config(
        episodes=2, max_episode_steps=30, hidden_size=8, batch_size=16, learning_starts=20, random_steps=20,
        noise_sigma=2.0, eval_episodes=1,
    )  # fmt: skip
    train(config)
    assert len(stored) == 60
    assert not any(terminated for _, terminated in stored)
    actions = np.stack([a for a, _ in stored])
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert actions.min() < -0.9 and actions.max() > 0.9  # large noise reaches the clip at both ends
