"""The torch-free actor used for serving: a numpy forward pass of an exported `ddpg-actor/1` file.

Weights are transposed once at load time so that a forward pass is three `matmul`s on contiguous
float32 arrays, for one observation or a batch, with no per-call copies of the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.weights import ActorWeights, decode_actor, load_actor_file

FloatArray = npt.NDArray[np.float32]


class NumpyActor:
    """mu(s) scaled to the environment's action bounds, computed with numpy only."""

    __slots__ = ("_b1", "_b2", "_b3", "_half_range", "_high", "_low", "_mid", "_w1", "_w2", "_w3", "weights")

    def __init__(self, weights: ActorWeights) -> None:
        self.weights = weights
        t = weights.tensors
        # x @ W.T is the torch Linear; storing W.T contiguous avoids a strided matmul per request.
        self._w1 = np.ascontiguousarray(t["linear1.weight"].T)
        self._b1 = t["linear1.bias"]
        self._w2 = np.ascontiguousarray(t["linear2.weight"].T)
        self._b2 = t["linear2.bias"]
        self._w3 = np.ascontiguousarray(t["linear3.weight"].T)
        self._b3 = t["linear3.bias"]
        # low + (tanh + 1) / 2 * (high - low) == mid + tanh * half_range, one multiply-add fewer.
        self._mid = ((weights.action_high + weights.action_low) / 2).astype(np.float32)
        self._half_range = ((weights.action_high - weights.action_low) / 2).astype(np.float32)
        self._low = weights.action_low
        self._high = weights.action_high

    @classmethod
    def from_bytes(cls, data: bytes) -> NumpyActor:
        return cls(decode_actor(data))

    @classmethod
    def from_file(cls, path: str | Path) -> NumpyActor:
        return cls(load_actor_file(path))

    @property
    def obs_dim(self) -> int:
        return self.weights.obs_dim

    @property
    def act_dim(self) -> int:
        return self.weights.act_dim

    def squashed(self, observations: npt.ArrayLike) -> FloatArray:
        """The raw tanh output in [-1, 1], shape (batch, act_dim) or (act_dim,) for one observation."""
        x: FloatArray = np.asarray(observations, dtype=np.float32)
        h: FloatArray = x @ self._w1
        h += self._b1
        np.maximum(h, 0.0, out=h)
        h = h @ self._w2
        h += self._b2
        np.maximum(h, 0.0, out=h)
        out: FloatArray = h @ self._w3
        out += self._b3
        np.tanh(out, out=out)
        return out

    def act(self, observations: npt.ArrayLike) -> FloatArray:
        """Actions within [action_low, action_high] for one observation (obs_dim,) or a batch (n, obs_dim)."""
        out = self.squashed(observations)
        out *= self._half_range
        out += self._mid
        # float32 rounding can overshoot a bound by one ulp; the contract is "within the bounds".
        np.clip(out, self._low, self._high, out=out)
        return out
