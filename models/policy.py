"""The torch-free actor used for serving: a numpy forward pass of any policy the weights format describes.

Weights are transposed once at load time so that a forward pass is one `matmul` per layer on contiguous
float32 arrays, for one observation or a batch, with no per-call copies of the weights. Observation
normalization, per-layer activations and the output transform (models.policy_format) are applied in between.

One observation (the /act hot path) takes a separate route, `act_one`: one call of a compiled kernel
(models.fused) on the policy packed once at load, into per-thread scratch; see its docstring.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.fused import forward_one_kernel, pack_actor, scratch_size
from models.policy_types import LEAKY_RELU_SLOPE, Activation, OutputTransform
from models.weights import ActorWeights, decode_actor, load_actor_file

FloatArray = npt.NDArray[np.float32]


def _relu(h: FloatArray) -> None:
    np.maximum(h, 0.0, out=h)


def _tanh(h: FloatArray) -> None:
    np.tanh(h, out=h)


def _elu(h: FloatArray) -> None:  # alpha 1, torch's default
    negative = h < 0
    h[negative] = np.expm1(h[negative])


def _leaky_relu(h: FloatArray) -> None:  # max(h, slope * h) is leaky relu for a slope below 1
    np.maximum(h, h * np.float32(LEAKY_RELU_SLOPE), out=h)


# In place on a float32 array the actor owns (never the caller's observations).
_ACTIVATIONS: dict[Activation, Callable[[FloatArray], None]] = {
    Activation.RELU: _relu,
    Activation.TANH: _tanh,
    Activation.ELU: _elu,
    Activation.LEAKY_RELU: _leaky_relu,
}


class NumpyActor:
    """The policy's action within the environment's bounds, without torch (numpy; one observation: compiled)."""

    __slots__ = (
        "_biases",
        "_half_range",
        "_high",
        "_low",
        "_mid",
        "_norm_clip",
        "_norm_mean",
        "_norm_std",
        "_packed",
        "_scratch",
        "_scratch_size",
        "_steps",
        "_tanh_output",
        "_transposed",
        "weights",
    )

    def __init__(self, weights: ActorWeights) -> None:
        self.weights = weights
        # x @ W.T is the torch Linear; storing W.T contiguous avoids a strided matmul per request.
        self._transposed = [np.ascontiguousarray(layer.weight.T) for layer in weights.layers]
        self._biases = [layer.bias for layer in weights.layers]
        activations: list[Callable[[FloatArray], None] | None] = [_ACTIVATIONS[a] for a in weights.activations]
        # One tuple per layer, walked once per call: the fewest Python operations per layer (batches of one count).
        self._steps = tuple(zip(self._transposed, self._biases, [*activations, None], strict=True))
        self._tanh_output = weights.output == OutputTransform.TANH_SCALE
        norm = weights.obs_normalization
        self._norm_mean = None if norm is None else norm.mean
        self._norm_std = None if norm is None else norm.std()
        self._norm_clip = None if norm is None or norm.clip is None else np.float32(norm.clip)
        # low + (tanh + 1) / 2 * (high - low) == mid + tanh * half_range, one multiply-add fewer.
        self._mid = ((weights.action_high + weights.action_low) / 2).astype(np.float32)
        self._half_range = ((weights.action_high - weights.action_low) / 2).astype(np.float32)
        self._low = weights.action_low
        self._high = weights.action_high
        # One observation: the fused kernel's single parameter array (models.fused).
        self._packed = pack_actor(
            list(zip(self._transposed, self._biases, strict=True)),
            self._low,
            self._high,
            activations=[str(activation) for activation in weights.activations],
            output=str(weights.output),
            norm_mean=self._norm_mean,
            norm_std=self._norm_std,
            norm_clip=None if norm is None else norm.clip,
        )
        self._scratch_size = scratch_size([weights.obs_dim, *weights.hidden_sizes, weights.act_dim])
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

    def normalized(self, observations: npt.ArrayLike) -> FloatArray:
        """The observations as the network sees them: normalized and clipped when the policy says so."""
        x: FloatArray = np.asarray(observations, dtype=np.float32)
        if self._norm_mean is None or self._norm_std is None:
            return x
        x = x - self._norm_mean
        x /= self._norm_std
        if self._norm_clip is not None:
            np.maximum(x, -self._norm_clip, out=x)
            np.minimum(x, self._norm_clip, out=x)
        return x

    def squashed(self, observations: npt.ArrayLike) -> FloatArray:
        """The network's output before scaling, shape (batch, act_dim) or (act_dim,) for one observation.

        For a `tanh_scale` policy the tanh output in [-1, 1]; for a `clip` policy the last layer's raw output.
        """
        # Without normalization, no method call: a batch of one pays for every Python operation here.
        h = np.asarray(observations, dtype=np.float32) if self._norm_mean is None else self.normalized(observations)
        for weight, bias, activation in self._steps:
            h = h @ weight  # a new array: the caller's observations are never written
            h += bias
            if activation is not None:
                activation(h)
        if self._tanh_output:
            np.tanh(h, out=h)
        return h

    def act(self, observations: npt.ArrayLike) -> FloatArray:
        """Actions within [action_low, action_high] for one observation (obs_dim,) or a batch (n, obs_dim).

        numpy throughout (no compiled kernel, so no compile on first use): the trainer evaluates through this.
        """
        out = self.squashed(observations)
        if self._tanh_output:
            out *= self._half_range
            out += self._mid
        # float32 rounding can overshoot a bound by one ulp; the contract is "within the bounds" (and `clip`
        # policies are clipped here by definition). (Two ufuncs, not np.clip: its Python-level dispatch cost
        # ~9 us per call here.)
        np.maximum(out, self._low, out=out)
        np.minimum(out, self._high, out=out)
        return out

    def act_one(self, observation: FloatArray) -> list[float]:
        """The action for one contiguous float32 observation of length obs_dim, as Python floats (the /act path).

        The arithmetic of `act` in one compiled call (models.fused) instead of a dozen or more numpy calls;
        equal within float32 rounding. The kernel is compiled on a process's first call (~1 s): a server
        calls `warm_up` where that may block. ValueError for an observation of the wrong length.
        """
        try:
            scratch, out = self._scratch.buffers
        except AttributeError:
            scratch, out = self._scratch.buffers = (
                np.empty(self._scratch_size, np.float64),
                np.empty(self.weights.act_dim, np.float32),
            )
        forward_one_kernel()(observation, self._packed, scratch, out)
        actions: list[float] = out.tolist()
        return actions

    def warm_up(self) -> None:
        """Compile the one-observation kernel now (once per process), so that no request waits for it."""
        self.act_one(np.zeros(self.weights.obs_dim, np.float32))
