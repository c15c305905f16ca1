"""Running observation normalization, as Stable-Baselines3's VecNormalize does it (norm_obs=True, training=True).

Why: DDPG's networks learn slowly, or not at all, from observations on very different scales (MountainCarContinuous's
position spans ~1.8 while its velocity spans ~0.14; many robotics envs mix metres, radians and raw sensor counts).
Scaling each dimension by a running estimate of its mean and variance puts them all near N(0, 1).

How, step by step as SB3 does it:
1. Every observation the env returns (resets included) updates the running mean and variance (float64, Chan et
   al.'s parallel update, starting from a count of 1e-4 as SB3's RunningMeanStd does).
2. The actor acts on normalized observations: clip((obs - mean) / sqrt(var + epsilon), -clip, clip).
3. The replay buffer keeps the raw observations; a sampled batch is normalized with the statistics of the moment
   (SB3's ReplayBuffer with a VecNormalize env does the same), so old transitions never carry stale scaling.
4. An evaluation and the export freeze the statistics of that moment into the policy file (`ObsNormalization`),
   which every server applies before the network, in the same float32 arithmetic as `normalize` here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.policy_types import ObsNormalization

FloatArray = npt.NDArray[np.float32]

CLIP = 10.0  # VecNormalize's clip_obs default
EPSILON = 1e-8  # VecNormalize's default
INITIAL_COUNT = 1e-4  # RunningMeanStd's: the first update dominates the prior of mean 0, variance 1


class RunningObsNormalizer:
    """Running per-dimension mean and variance of observations, and the normalization they define."""

    def __init__(self, obs_dim: int) -> None:
        self.mean = np.zeros(obs_dim, np.float64)
        self.var = np.ones(obs_dim, np.float64)
        self.count = INITIAL_COUNT
        self._frozen: ObsNormalization | None = None

    def update(self, observations: npt.ArrayLike) -> None:
        """Add one observation (obs_dim,) or a batch (n, obs_dim) to the statistics."""
        batch = np.asarray(observations, np.float64).reshape(-1, self.mean.shape[0])
        batch_count = batch.shape[0]
        batch_mean = batch.mean(axis=0)
        batch_var = batch.var(axis=0)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total
        self._frozen = None

    def frozen(self) -> ObsNormalization:
        """The statistics of this moment as the policy file stores them (float32), validated."""
        if self._frozen is None:
            self._frozen = ObsNormalization(
                self.mean.astype(np.float32), self.var.astype(np.float32), clip=CLIP, epsilon=EPSILON
            )
        return self._frozen

    def normalize(self, observations: npt.ArrayLike) -> FloatArray:
        """Observations as the actor sees them: the float32 arithmetic of models.policy.NumpyActor.normalized."""
        frozen = self.frozen()
        x: FloatArray = np.asarray(observations, np.float32) - frozen.mean
        x /= frozen.std()
        np.maximum(x, np.float32(-CLIP), out=x)
        np.minimum(x, np.float32(CLIP), out=x)
        return x
