"""The torch-free NumpyActor computes what the torch Actor computes, through the exported bytes."""

import numpy as np
import pytest
import torch

from models.networks import Actor
from models.policy import NumpyActor
from tests.models.actor_pairs import torch_and_numpy_actor

LOW = np.array([-2.0, 0.5], dtype=np.float32)
HIGH = np.array([2.0, 1.5], dtype=np.float32)


def _pair(obs_dim: int = 5, hidden: int = 32, act_dim: int = 2, seed: int = 0) -> tuple[Actor, NumpyActor]:
    return torch_and_numpy_actor(obs_dim, hidden, act_dim, seed, LOW, HIGH)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_parity_within_1e_5(seed: int) -> None:
    actor, numpy_actor = _pair(seed=seed)
    obs = np.random.default_rng(seed).normal(scale=3.0, size=(257, 5)).astype(np.float32)
    with torch.no_grad():
        expected = actor(torch.from_numpy(obs)).numpy()
    got = numpy_actor.squashed(obs)
    assert got.shape == (257, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    scaled = LOW + (expected + 1.0) / 2.0 * (HIGH - LOW)
    np.testing.assert_allclose(numpy_actor.act(obs), scaled, atol=1e-5, rtol=0)


def test_single_observation_parity_and_shape() -> None:
    actor, numpy_actor = _pair()
    obs = np.array([0.3, -1.2, 2.0, 0.0, 5.0], dtype=np.float32)
    with torch.no_grad():
        expected = actor(torch.from_numpy(obs).unsqueeze(0)).numpy()[0]
    action = numpy_actor.act(obs)
    assert action.shape == (2,)
    np.testing.assert_allclose(numpy_actor.squashed(obs), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(action, LOW + (expected + 1.0) / 2.0 * (HIGH - LOW), atol=1e-5, rtol=0)
    assert np.all(action >= LOW) and np.all(action <= HIGH)


def test_accepts_plain_lists() -> None:
    _, numpy_actor = _pair()
    assert numpy_actor.act([[0.0] * 5, [1.0] * 5]).shape == (2, 2)


def test_single_observations_from_many_threads_match_the_batch_route() -> None:
    # act_one uses per-thread scratch buffers: threads sharing an actor must not see each other's.
    from concurrent.futures import ThreadPoolExecutor

    _, numpy_actor = _pair()
    obs = np.random.default_rng(7).normal(scale=3.0, size=(400, 5)).astype(np.float32)
    sequential = np.array([numpy_actor.act_one(row) for row in obs])
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = np.array(list(pool.map(numpy_actor.act_one, obs)))
    np.testing.assert_array_equal(threaded, sequential)
    # The same numbers as the batch route (float32 BLAS vs the kernel's float64 sums aside).
    np.testing.assert_allclose(sequential, numpy_actor.act(obs), atol=1e-5, rtol=0)
    # Each result is its own list, not a view of a buffer the next call overwrites.
    first = numpy_actor.act_one(obs[0])
    numpy_actor.act_one(obs[1])
    assert first == sequential[0].tolist()
