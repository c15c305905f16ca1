"""NumpyActor on the general format: any depth and widths, each activation, both output transforms, normalization;
the batch route, the one-observation kernel and a torch reference agree."""

import numpy as np
import pytest

from models.policy import NumpyActor
from models.policy_types import ObsNormalization, OutputTransform
from models.policy_validation import build_policy_weights
from models.random_actor import random_policy_weights
from models.weights import decode_actor, encode_policy
from tests.models.torch_reference import torch_actions

CASES = [
    # (sizes, activations, output, normalized)
    ((17, 400, 300, 6), ["relu", "relu"], "tanh_scale", False),  # TD3 / DDPG (SB3 and CleanRL)
    ((8, 64, 64, 2), ["tanh", "tanh"], "clip", True),  # PPO / A2C MlpPolicy under VecNormalize
    ((5, 32, 2), ["elu"], "tanh_scale", True),
    ((4, 16, 16, 16, 3), ["leaky_relu", "tanh", "relu"], "clip", False),
    ((3, 1), [], "tanh_scale", False),  # a linear policy
    ((2, 256, 256, 1), ["relu", "relu"], "tanh_scale", True),  # SAC-like, normalized
]


def _observations(weights_obs_dim: int, normalized: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Normalized policies get observations on their statistics' scale (mean up to 50, std up to 20), with some
    # beyond the clip; the others get a few unit-scale ones and some large ones.
    scale = 60.0 if normalized else 3.0
    return rng.normal(scale=scale, size=(300, weights_obs_dim)).astype(np.float32)


@pytest.mark.parametrize(("sizes", "activations", "output", "normalized"), CASES)
def test_batch_and_one_observation_match_a_torch_reference(
    sizes: tuple[int, ...], activations: list[str], output: str, normalized: bool
) -> None:
    # A clip policy's raw outputs are about unit-sized: bounds of 0.5 clip some of them, as the test needs.
    bound = 0.5 if output == "clip" else 1.5
    weights = random_policy_weights(
        3, sizes=sizes, activations=activations, output=output, normalized=normalized, action_bound=bound
    )
    actor = NumpyActor(decode_actor(encode_policy(weights)))
    observations = _observations(sizes[0], normalized, 3)
    expected = torch_actions(weights, observations)
    batch = actor.act(observations)
    one = np.array([actor.act_one(np.ascontiguousarray(row)) for row in observations], np.float32)
    assert batch.shape == one.shape == (300, sizes[-1])
    np.testing.assert_allclose(batch, expected, atol=2e-5, rtol=0)
    np.testing.assert_allclose(one, expected, atol=2e-5, rtol=0)
    for actions in (batch, one):
        assert np.all(actions >= -bound) and np.all(actions <= bound)
    if output == "clip":  # some actions must be clipped for the test to mean anything
        assert np.any(np.abs(batch) == bound)


def test_normalization_is_applied_and_clipped() -> None:
    # A linear clip policy reading one observation: the action is the normalized, clipped observation itself.
    layers = random_policy_weights(0, sizes=(1, 1), output="clip").layers
    identity = type(layers[0])(np.ones((1, 1)), np.zeros(1), None)
    weights = build_policy_weights(
        [identity],
        output=OutputTransform.CLIP,
        action_low=[-100.0],
        action_high=[100.0],
        obs_normalization=ObsNormalization(np.array([10.0]), np.array([4.0]), clip=3.0, epsilon=0.0),
        env_id="Test-v0",
    )
    actor = NumpyActor(weights)
    for observation, expected in ((10.0, 0.0), (14.0, 2.0), (6.0, -2.0), (100.0, 3.0), (-100.0, -3.0)):
        x = np.array([observation], np.float32)
        assert actor.act(x).tolist() == [expected]
        assert actor.act_one(x) == [expected]


def test_extreme_observations_give_actions_within_bounds() -> None:
    biggest = float(np.finfo(np.float32).max)
    for output, normalized in (("tanh_scale", True), ("clip", False), ("clip", True)):
        weights = random_policy_weights(1, sizes=(4, 16, 2), activations=["tanh"], output=output, normalized=normalized)
        actor = NumpyActor(weights)
        for row in ([biggest] * 4, [-biggest] * 4, [biggest, -biggest, biggest, -biggest]):
            action = np.array(actor.act_one(np.array(row, np.float32)))
            assert np.all(np.isfinite(action)) and np.all(np.abs(action) <= 2.0), (output, normalized, row)


def test_the_caller_observations_are_not_written() -> None:
    actor = NumpyActor(random_policy_weights(2, sizes=(3, 8, 1), normalized=True))
    observations = np.arange(6, dtype=np.float32).reshape(2, 3)
    actor.act(observations)
    assert observations.tolist() == np.arange(6, dtype=np.float32).reshape(2, 3).tolist()
