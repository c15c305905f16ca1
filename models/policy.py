"""The torch-free actor used for serving: a numpy forward pass of an exported `ddpg-actor/1` file.

Weights are transposed once at load time so that a forward pass is three `matmul`s on contiguous
float32 arrays, for one observation or a batch, with no per-call copies of the weights.

One observation (the /act hot path) takes a separate route, `act_one`: one call of a compiled kernel
(models.fused) on the weights packed once at load, into per-thread scratch; see its docstring.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.fused import forward_one_kernel, pack_actor
from models.weights import ActorWeights, decode_actor, load_actor_file

FloatArray = npt.NDArray[np.float32]


class NumpyActor:
    """mu(s) scaled to the environment's action bounds, without torch (numpy; one observation: a compiled kernel)."""

    __slots__ = (
        "_b1",
        "_b2",
        "_b3",
        "_half_range",
        "_high",
        "_low",
        "_mid",
        "_packed",
        "_scratch",
        "_w1",
        "_w2",
        "_w3",
        "weights",
    )

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
        # One observation: the fused kernel's single parameter array (models.fused).
        self._packed = pack_actor(
            [(self._w1, self._b1), (self._w2, self._b2), (self._w3, self._b3)], self._low, self._high
        )
        # Per thread: an actor may be shared by the event loop and thread-pool endpoints at once.
        self._scratch = threading.local()

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
        """Actions within [action_low, action_high] for one observation (obs_dim,) or a batch (n, obs_dim).

        numpy throughout (no compiled kernel, so no compile on first use): the trainer evaluates through this.
        """
        out = self.squashed(observations)
        out *= self._half_range
        out += self._mid
        # float32 rounding can overshoot a bound by one ulp; the contract is "within the bounds".
        # (Two ufuncs, not np.clip: its Python-level dispatch cost ~9 us per call here.)
        np.maximum(out, self._low, out=out)
        np.minimum(out, self._high, out=out)
        return out

    def act_one(self, observation: FloatArray) -> list[float]:
        """The action for one contiguous float32 observation of length obs_dim, as Python floats (the /act path).

        The arithmetic of `act` in one compiled call (models.fused) instead of about fourteen numpy calls;
        equal within float32 rounding. The kernel is compiled on a process's first call (~0.5 s): a server
        calls `warm_up` where that may block. ValueError for an observation of the wrong length.
        """
        try:
            scratch, out = self._scratch.buffers
        except AttributeError:
            scratch, out = self._scratch.buffers = (
                np.empty(2 * self.weights.hidden_size, np.float64),
                np.empty(self.weights.act_dim, np.float32),
            )
        forward_one_kernel()(observation, self._packed, scratch, out)
        actions: list[float] = out.tolist()
        return actions

    def warm_up(self) -> None:
        """Compile the one-observation kernel now (once per process), so that no request waits for it."""
        self.act_one(np.zeros(self.weights.obs_dim, np.float32))
