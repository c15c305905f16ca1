"""Exploration noise added to the actor's [-1, 1] output: Ornstein-Uhlenbeck (the tutorial) and Gaussian."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class ActionNoise(ABC):
    """One noise sample per env step; `reset` at the start of every episode."""

    def __init__(self, act_dim: int, sigma: float, rng: np.random.Generator) -> None:
        if act_dim < 1:
            raise ValueError(f"act_dim must be >= 1, got {act_dim}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.act_dim = act_dim
        self.sigma = sigma
        self.rng = rng

    @abstractmethod
    def __call__(self) -> FloatArray:
        """The next noise sample, shape (act_dim,)."""

    def reset(self) -> None:  # noqa: B027 - stateless noises have nothing to reset
        """Forget any state carried between steps."""


class GaussianNoise(ActionNoise):
    """Independent N(0, sigma^2) per step: what TD3 and most modern DDPG setups use."""

    def __call__(self) -> FloatArray:
        return (self.sigma * self.rng.standard_normal(self.act_dim)).astype(np.float32)


class OrnsteinUhlenbeckNoise(ActionNoise):
    """Temporally correlated noise x += theta (mu - x) dt + sigma sqrt(dt) N(0, 1), as in the DDPG paper.

    dt defaults to 1 as in the tutorial (rlkit's OUStrategy), so theta is the per-step reversion fraction.
    """

    def __init__(
        self,
        act_dim: int,
        sigma: float,
        rng: np.random.Generator,
        *,
        theta: float = 0.15,
        mu: float = 0.0,
        dt: float = 1.0,
    ) -> None:
        super().__init__(act_dim, sigma, rng)
        if not 0 <= theta * dt <= 1:
            raise ValueError(f"theta * dt must be within [0, 1], got {theta * dt}")
        self.theta = theta
        self.mu = mu
        self.dt = dt
        self.state = np.full(act_dim, mu, dtype=np.float64)

    def reset(self) -> None:
        self.state = np.full(self.act_dim, self.mu, dtype=np.float64)

    def __call__(self) -> FloatArray:
        drift = self.theta * (self.mu - self.state) * self.dt
        diffusion = self.sigma * np.sqrt(self.dt) * self.rng.standard_normal(self.act_dim)
        self.state = self.state + drift + diffusion
        return self.state.astype(np.float32)


def make_noise(kind: str, act_dim: int, sigma: float, theta: float, rng: np.random.Generator) -> ActionNoise:
    """The noise a config names ('ou' or 'gaussian')."""
    if kind == "ou":
        return OrnsteinUhlenbeckNoise(act_dim, sigma, rng, theta=theta)
    if kind == "gaussian":
        return GaussianNoise(act_dim, sigma, rng)
    raise ValueError(f"unknown noise {kind!r}; expected 'ou' or 'gaussian'")
