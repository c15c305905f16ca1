"""The compiled one-observation kernel (models.fused) behind NumpyActor.act_one: same numbers, never unsafe."""

import numpy as np
import pytest
import torch

from models.fused import forward_one_kernel, pack_actor, packed_size
from models.networks import Actor
from models.policy import NumpyActor
from tests.models.actor_pairs import torch_and_numpy_actor


def _pair(obs_dim: int, hidden: int, act_dim: int, seed: int) -> tuple[Actor, NumpyActor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    low = rng.uniform(-3.0, 0.0, act_dim).astype(np.float32)
    high = (low + rng.uniform(0.5, 4.0, act_dim)).astype(np.float32)
    return (*torch_and_numpy_actor(obs_dim, hidden, act_dim, seed, low, high), low, high)


@pytest.mark.parametrize(
    ("obs_dim", "hidden", "act_dim", "seed"),
    [(3, 64, 1, 0), (3, 256, 1, 1), (5, 1, 2, 2), (1, 7, 3, 3), (11, 33, 4, 4)],
)
def test_act_one_matches_torch(obs_dim: int, hidden: int, act_dim: int, seed: int) -> None:
    actor, numpy_actor, low, high = _pair(obs_dim, hidden, act_dim, seed)
    obs = np.random.default_rng(seed).normal(scale=3.0, size=(200, obs_dim)).astype(np.float32)
    with torch.no_grad():
        squashed = actor(torch.from_numpy(obs)).numpy()
    expected = low + (squashed + 1.0) / 2.0 * (high - low)
    got = np.array([numpy_actor.act_one(row) for row in obs], dtype=np.float32)
    assert got.shape == (200, act_dim)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.all(got >= low) and np.all(got <= high)


def test_act_one_is_at_least_as_accurate_as_float32_numpy() -> None:
    # The kernel sums in float64, so against a float64 reference it must not be worse than numpy's float32 route.
    _, numpy_actor, low, high = _pair(3, 64, 1, 5)
    obs = np.random.default_rng(5).normal(scale=2.0, size=(500, 3))
    t = {k: v.astype(np.float64) for k, v in numpy_actor.weights.tensors.items()}
    h = np.maximum(obs @ t["linear1.weight"].T + t["linear1.bias"], 0.0)
    h = np.maximum(h @ t["linear2.weight"].T + t["linear2.bias"], 0.0)
    reference = low + (np.tanh(h @ t["linear3.weight"].T + t["linear3.bias"]) + 1.0) / 2.0 * (high - low)
    obs32 = obs.astype(np.float32)
    kernel_error = np.abs(np.array([numpy_actor.act_one(row) for row in obs32]) - reference).max()
    numpy_error = np.abs(numpy_actor.act(obs32) - reference).max()
    assert kernel_error <= numpy_error + 1e-7


def test_extreme_observations_give_actions_within_bounds() -> None:
    # float32's largest values overflow the pre-activations to infinity (and inf - inf to NaN) inside the pass.
    _, numpy_actor, low, high = _pair(4, 16, 2, 6)
    biggest = float(np.finfo(np.float32).max)
    for row in ([biggest] * 4, [-biggest] * 4, [biggest, -biggest, biggest, -biggest], [0.0] * 4):
        action = np.array(numpy_actor.act_one(np.array(row, np.float32)))
        assert np.all(np.isfinite(action)), row
        assert np.all(action >= low) and np.all(action <= high), row


def test_sizes_that_do_not_match_raise_instead_of_reading_past_the_end() -> None:
    _, numpy_actor, _, _ = _pair(3, 8, 1, 7)
    with pytest.raises(ValueError, match="do not match"):
        numpy_actor.act_one(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="do not match"):
        numpy_actor.act_one(np.zeros(2, np.float32))
    kernel = forward_one_kernel()
    packed = numpy_actor._packed
    assert packed.shape == (packed_size([3, 8, 8, 1]),)
    x, scratch, out = np.zeros(3, np.float32), np.zeros(16, np.float64), np.zeros(1, np.float32)
    kernel(x, packed, scratch, out)  # the right sizes work
    with pytest.raises(ValueError, match="do not match"):
        kernel(x, packed[:-1].copy(), scratch, out)  # a truncated parameter array
    with pytest.raises(ValueError, match="do not match"):
        kernel(x, packed, np.zeros(15, np.float64), out)  # scratch too small for two hidden layers
    with pytest.raises(ValueError, match="do not match"):
        kernel(x, packed, scratch, np.zeros(2, np.float32))
    for index, value in ((0, 1e9), (0, 0.0), (4, 0.0), (5, 1e6)):  # layer count, obs_dim, a width: corrupted
        corrupted = packed.copy()
        corrupted[index] = value
        with pytest.raises(ValueError, match="do not match"):
            kernel(x, corrupted, scratch, out)


def test_pack_actor_rejects_layers_that_do_not_chain() -> None:
    w = np.zeros((3, 4), np.float32)
    b = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="do not chain"):
        pack_actor([(w, b), (np.zeros((5, 5), np.float32), np.zeros(5, np.float32)), (w, b)], b[:1], b[:1])
