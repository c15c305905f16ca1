import numpy as np
import pytest

from trainer.replay_buffer import ReplayBuffer, ReplaySamples


def _fill(buffer: ReplayBuffer, values: range) -> None:
    for v in values:
        buffer.add([v, v, v], [v / 100], float(v), [v + 1, v + 1, v + 1], terminated=(v % 2 == 0))


def test_add_and_length_grow_until_capacity() -> None:
    buffer = ReplayBuffer(5, obs_dim=3, act_dim=1)
    assert len(buffer) == 0
    _fill(buffer, range(3))
    assert len(buffer) == 3
    _fill(buffer, range(3, 10))
    assert len(buffer) == 5


def test_wrap_around_overwrites_the_oldest_transitions() -> None:
    buffer = ReplayBuffer(4, obs_dim=3, act_dim=1)
    _fill(buffer, range(6))  # 0..5 into 4 slots: 0 and 1 are overwritten by 4 and 5
    assert sorted(buffer.rewards[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert buffer.rewards[0, 0] == 4.0 and buffer.rewards[1, 0] == 5.0
    assert buffer.observations[1].tolist() == [5.0, 5.0, 5.0]
    assert buffer.next_observations[1].tolist() == [6.0, 6.0, 6.0]
    assert buffer.terminated[0, 0] == 1.0 and buffer.terminated[1, 0] == 0.0


def test_sample_returns_consistent_rows_of_stored_transitions() -> None:
    buffer = ReplayBuffer(8, obs_dim=3, act_dim=1)
    _fill(buffer, range(20))
    batch = buffer.sample(256, np.random.default_rng(0))
    assert isinstance(batch, ReplaySamples)
    assert batch.observations.shape == (256, 3) and batch.next_observations.shape == (256, 3)
    assert batch.actions.shape == (256, 1) and batch.rewards.shape == (256, 1) and batch.terminated.shape == (256, 1)
    assert all(a.dtype == np.float32 for a in batch)
    # Every row is one transition: fields line up, and only the 8 most recent (12..19) remain.
    rewards = batch.rewards[:, 0]
    assert set(rewards.tolist()) <= set(range(12, 20))
    assert len(set(rewards.tolist())) > 4  # sampling actually spreads over the buffer
    np.testing.assert_array_equal(batch.observations[:, 0], rewards)
    np.testing.assert_array_equal(batch.next_observations[:, 0], rewards + 1)
    np.testing.assert_allclose(batch.actions[:, 0], rewards / 100, rtol=1e-6)
    np.testing.assert_array_equal(batch.terminated[:, 0], (rewards % 2 == 0).astype(np.float32))


def test_sample_only_draws_from_filled_slots() -> None:
    buffer = ReplayBuffer(1000, obs_dim=3, act_dim=1)
    _fill(buffer, range(1, 4))
    batch = buffer.sample(500, np.random.default_rng(1))
    assert set(batch.rewards[:, 0].tolist()) == {1.0, 2.0, 3.0}  # never the zero rows of unused slots


def test_sampling_is_reproducible_with_the_same_generator_seed() -> None:
    buffer = ReplayBuffer(50, obs_dim=3, act_dim=1)
    _fill(buffer, range(50))
    a = buffer.sample(32, np.random.default_rng(7))
    b = buffer.sample(32, np.random.default_rng(7))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_sampling_an_empty_buffer_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, obs_dim=3, act_dim=1).sample(2, np.random.default_rng(0))
