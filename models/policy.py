"""The torch-free actor used for serving: a numpy forward pass of an exported `ddpg-actor/1` file.

Weights are transposed once at load time so that a forward pass is three `matmul`s on contiguous
float32 arrays, for one observation or a batch, with no per-call copies of the weights.

One observation (the /act hot path) takes a separate route, `act_one`: biases folded into the weights, `np.dot`
into per-thread scratch buffers, and the last few numbers squashed as Python floats; see its docstring.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.weights import ActorWeights, decode_actor, load_actor_file

FloatArray = npt.NDArray[np.float32]


class NumpyActor:
    """mu(s) scaled to the environment's action bounds, computed with numpy only."""

    __slots__ = (
        "_b1",
        "_b2",
        "_b3",
        "_half_range",
        "_high",
        "_low",
        "_mid",
        "_scratch",
        "_tail",
        "_w1",
        "_w1_biased",
        "_w2",
        "_w2_biased",
        "_w3",
        "_w3_biased",
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
        # One observation: each bias is folded in as an extra weight row, fed by a constant 1 kept at the end of
        # the layer's input buffer, so a layer is one np.dot (plus relu) instead of dot, add, relu.
        self._w1_biased = np.ascontiguousarray(np.vstack([self._w1, self._b1[None, :]]))
        self._w2_biased = np.ascontiguousarray(np.vstack([self._w2, self._b2[None, :]]))
        self._w3_biased = np.ascontiguousarray(np.vstack([self._w3, self._b3[None, :]]))
        # ...and the last act_dim numbers are squashed and scaled as Python floats: a ufunc call costs about a
        # microsecond, math.tanh on a float a few dozen nanoseconds.
        self._tail = tuple(
            zip(self._mid.tolist(), self._half_range.tolist(), self._low.tolist(), self._high.tolist(), strict=True)
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
        """Actions within [action_low, action_high] for one observation (obs_dim,) or a batch (n, obs_dim)."""
        x: FloatArray = np.asarray(observations, dtype=np.float32)
        if x.ndim == 1 and x.shape[0] == self.weights.obs_dim:
            return np.asarray(self.act_one(x), dtype=np.float32)
        out = self.squashed(x)
        out *= self._half_range
        out += self._mid
        # float32 rounding can overshoot a bound by one ulp; the contract is "within the bounds".
        # (Two ufuncs, not np.clip: its Python-level dispatch cost ~9 us per call here.)
        np.maximum(out, self._low, out=out)
        np.minimum(out, self._high, out=out)
        return out

    def act_one(self, observation: FloatArray) -> list[float]:
        """The action for one float32 observation of length obs_dim, as Python floats (the /act hot path).

        The same arithmetic as `act` (within float32 rounding), with seven numpy calls instead of fourteen and
        no temporary arrays: measured under the server, the forward pass was most of what /act costs beyond
        parsing its body.
        """
        try:
            x_in, x1, h1_in, h1, h2_in, h2, z = self._scratch.buffers
        except AttributeError:
            x_in, x1, h1_in, h1, h2_in, h2, z = self._scratch.buffers = self._new_buffers()
        x_in[...] = observation
        np.dot(x1, self._w1_biased, out=h1)
        np.maximum(h1_in, 0.0, out=h1_in)  # relu; the trailing constant 1 stays 1
        np.dot(h1_in, self._w2_biased, out=h2)
        np.maximum(h2_in, 0.0, out=h2_in)
        np.dot(h2_in, self._w3_biased, out=z)
        # min/max keep the float64 result within the bounds the float32 route clips to.
        return [
            min(high, max(low, mid + math.tanh(value) * half_range))
            for value, (mid, half_range, low, high) in zip(z.tolist(), self._tail, strict=True)
        ]

    def _new_buffers(self) -> tuple[FloatArray, ...]:
        """Per-thread scratch: each layer's input with a trailing constant 1 (the folded bias), and views."""
        obs_dim, hidden, act_dim = self.weights.obs_dim, self.weights.hidden_size, self.weights.act_dim
        x1 = np.ones(obs_dim + 1, np.float32)
        h1_in = np.ones(hidden + 1, np.float32)
        h2_in = np.ones(hidden + 1, np.float32)
        return x1[:obs_dim], x1, h1_in, h1_in[:hidden], h2_in, h2_in[:hidden], np.empty(act_dim, np.float32)
