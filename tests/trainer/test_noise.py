import itertools

import numpy as np
import pytest

from trainer.noise import GaussianNoise, OrnsteinUhlenbeckNoise, make_noise


def test_gaussian_noise_has_zero_mean_and_the_requested_scale() -> None:
    noise = GaussianNoise(act_dim=2, sigma=0.3, rng=np.random.default_rng(0))
    samples = np.stack([noise() for _ in range(20_000)])
    assert samples.shape == (20_000, 2)
    np.testing.assert_allclose(samples.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(samples.std(axis=0), 0.3, rtol=0.05)
    # Independent across steps: no lag-1 correlation.
    lag1 = np.corrcoef(samples[:-1, 0], samples[1:, 0])[0, 1]
    assert abs(lag1) < 0.05


def test_ou_noise_reverts_to_its_mean() -> None:
    # Without diffusion the state decays geometrically towards mu by (1 - theta) per step.
    noise = OrnsteinUhlenbeckNoise(act_dim=1, sigma=0.0, rng=np.random.default_rng(0), theta=0.15, mu=0.0)
    noise.state = np.array([1.0])
    values = [float(noise()[0]) for _ in range(30)]
    np.testing.assert_allclose(values[0], 0.85)
    np.testing.assert_allclose(values[-1], 0.85**30, rtol=1e-6)
    assert all(b < a for a, b in itertools.pairwise(values))


def test_ou_noise_is_correlated_and_has_the_stationary_scale() -> None:
    theta, sigma = 0.15, 0.3
    noise = OrnsteinUhlenbeckNoise(act_dim=1, sigma=sigma, rng=np.random.default_rng(1), theta=theta)
    samples = np.array([noise()[0] for _ in range(50_000)], dtype=np.float64)[1000:]
    # AR(1) x' = (1 - theta) x + sigma eps: stationary std sigma / sqrt(1 - (1 - theta)^2), lag-1 corr 1 - theta.
    expected_std = sigma / np.sqrt(1 - (1 - theta) ** 2)
    assert abs(samples.mean()) < 0.1
    assert samples.std() == pytest.approx(expected_std, rel=0.1)
    assert np.corrcoef(samples[:-1], samples[1:])[0, 1] == pytest.approx(1 - theta, abs=0.03)


def test_ou_reset_returns_the_state_to_mu() -> None:
    noise = OrnsteinUhlenbeckNoise(act_dim=3, sigma=0.5, rng=np.random.default_rng(2), mu=0.25)
    for _ in range(10):
        noise()
    noise.reset()
    np.testing.assert_array_equal(noise.state, [0.25, 0.25, 0.25])


def test_make_noise_picks_the_kind_and_rejects_unknown() -> None:
    rng = np.random.default_rng(0)
    assert isinstance(make_noise("ou", 1, 0.3, 0.15, rng), OrnsteinUhlenbeckNoise)
    assert isinstance(make_noise("gaussian", 1, 0.1, 0.15, rng), GaussianNoise)
    with pytest.raises(ValueError, match="unknown noise"):
        make_noise("pink", 1, 0.1, 0.15, rng)
