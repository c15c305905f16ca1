"""One observation through the actor in one compiled call: the /act hot path's forward pass.

Why not numpy: for one observation of the default preset's actor (3 -> 64 -> 64 -> 1) the arithmetic is a few
thousand multiply-adds, while each numpy call costs about half a microsecond of dispatch, and the forward pass
needs at least seven of them. Measured under the server (bench/serve_bench.py), those calls were most of
what /act costs beyond parsing its body; this kernel does the whole pass, normalization, squashing and clipping
included, in one call of about a microsecond. Batches keep numpy's BLAS (`NumpyActor.act`), which wins there.

One kernel serves every policy the format describes (models.policy_format: any depth and widths, an activation
per hidden layer, `tanh_scale` or `clip`, optional observation normalization). The policy travels as one flat
float32 array (`pack_actor`): every array argument costs the compiled function's dispatcher ~70 ns to check, so
the kernel takes four. The packed array starts with its own description (layer count, sizes, activation codes,
output, normalization), and the kernel checks every array's size against it before reading anything: numba
does not bounds-check, so a mismatch must be a ValueError, never a read past the end.

For the seed Actor (relu, relu, tanh_scale) the arithmetic is, operation for operation, the one the earlier
three-layer kernel did, so a `ddpg-actor/1` policy answers bit for bit as it always has: the first layer's
products are float32 (observation times float32 weight), the sums float64, relu'd inputs skipped.

numba is imported and the kernel compiled (~1 s) on first use, not at import: the trainer and the CLI load
this package without serving one observation at a time.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# Module globals, which numba compiles in as constants.
from models.policy_types import LEAKY_RELU_SLOPE
from models.strict_safetensors import MAX_LAYERS

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
ForwardOne = Callable[[FloatArray, FloatArray, FloatArray, FloatArray], None]

# Header: layer count, normalization flag, normalization clip (0: none), output code; then the layer count + 1
# sizes (obs_dim, hidden..., act_dim) and one activation code per layer (the last one's is 0). Stored as floats:
# exact in float32 far beyond any real width.
FIXED_HEADER = 4
ACTIVATION_CODES = {"relu": 1.0, "tanh": 2.0, "elu": 3.0, "leaky_relu": 4.0}
OUTPUT_CODES = {"tanh_scale": 0.0, "clip": 1.0}
_SIGNATURE = "void(float32[::1], float32[::1], float64[::1], float32[::1])"

Layer = tuple[FloatArray, FloatArray]


def packed_size(sizes: Sequence[int], *, normalized: bool = False) -> int:
    """Length of `pack_actor`'s array for layer sizes (obs_dim, hidden..., act_dim)."""
    n_layers = len(sizes) - 1
    header = FIXED_HEADER + len(sizes) + n_layers
    layers = sum((sizes[i] + 1) * sizes[i + 1] for i in range(n_layers))
    return header + (2 * sizes[0] if normalized else 0) + layers + 4 * sizes[-1]


def scratch_size(sizes: Sequence[int]) -> int:
    """float64 scratch the kernel needs: two buffers as wide as the widest layer output (act_dim included)."""
    return 2 * max(sizes[1:])


def pack_actor(
    layers: Sequence[Layer],
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    *,
    activations: Sequence[str] | None = None,
    output: str = "tanh_scale",
    norm_mean: npt.ArrayLike | None = None,
    norm_std: npt.ArrayLike | None = None,
    norm_clip: float | None = None,
) -> FloatArray:
    """The kernel's parameter array from (weight (in, out), bias (out,)) layers and the action bounds.

    `activations` names one activation per hidden layer (default: relu for each, the seed Actor's);
    `norm_std` is sqrt(var + epsilon), computed once by the caller. Weights are stored input-major (the torch
    Linear's W.T): the kernel adds one input's row to all outputs at a time, a contiguous multiply-add the
    compiler vectorises, and skips the rows of inputs that are zero (about half of them after a relu).
    """
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"1 to {MAX_LAYERS} layers, got {len(layers)}")
    sizes = [int(layers[0][0].shape[0])] + [int(weight.shape[1]) for weight, _ in layers]
    for index, (weight, bias) in enumerate(layers):
        if weight.shape != (sizes[index], sizes[index + 1]) or np.shape(bias) != (sizes[index + 1],):
            raise ValueError(f"layer shapes {[w.shape for w, _ in layers]} do not chain")
    names = ["relu"] * (len(layers) - 1) if activations is None else list(activations)
    if len(names) != len(layers) - 1:
        raise ValueError(f"{len(layers) - 1} hidden activations expected, got {len(names)}")
    normalized = norm_mean is not None
    if normalized != (norm_std is not None):
        raise ValueError("norm_mean and norm_std go together")
    low = np.asarray(action_low, np.float32)
    high = np.asarray(action_high, np.float32)
    header = [
        len(layers),
        1.0 if normalized else 0.0,
        0.0 if norm_clip is None else norm_clip,
        OUTPUT_CODES[output],
        *sizes,
        *(ACTIVATION_CODES[name] for name in names),
        0.0,
    ]
    parts: list[npt.ArrayLike] = [np.array(header, np.float32)]
    if normalized:
        parts += [np.asarray(norm_mean, np.float32), np.asarray(norm_std, np.float32)]
    for weight, bias in layers:
        parts += [np.asarray(weight, np.float32).ravel(), np.asarray(bias, np.float32)]
    # low + (tanh + 1) / 2 * (high - low) == mid + tanh * half_range, one multiply-add fewer.
    parts += [(high + low) / 2, (high - low) / 2, low, high]
    packed = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    assert packed.shape[0] == packed_size(sizes, normalized=normalized)
    return packed


def _forward_one(x: Any, params: Any, scratch: Any, out: Any) -> None:  # pragma: no cover - runs compiled
    """out = clip(transform(layers(normalize(x))), low, high); scratch: 2 * the widest layer output, float64."""
    n_layers = int(params[0])
    if not 1 <= n_layers <= MAX_LAYERS or params.shape[0] < FIXED_HEADER + 2 * n_layers + 1:
        raise ValueError("array sizes do not match the packed actor")
    normalized = params[1] != 0.0
    clip = params[2]
    clip_output = params[3] != 0.0
    sizes_at = FIXED_HEADER
    codes_at = sizes_at + n_layers + 1
    offset = codes_at + n_layers
    obs_dim = int(params[sizes_at])
    act_dim = int(params[sizes_at + n_layers])
    # packed_size and scratch_size, inlined: the compiled kernel cannot call plain Python functions.
    expected = offset + 4 * act_dim + (2 * obs_dim if normalized else 0)
    widest = 0
    for layer in range(n_layers):
        fan_in = int(params[sizes_at + layer])
        fan_out = int(params[sizes_at + layer + 1])
        if fan_in < 1 or fan_out < 1:
            raise ValueError("array sizes do not match the packed actor")
        expected += (fan_in + 1) * fan_out
        widest = max(widest, fan_out)
    if params.shape[0] != expected or x.shape[0] != obs_dim or out.shape[0] != act_dim or scratch.shape[0] < 2 * widest:
        raise ValueError("array sizes do not match the packed actor")
    mean = params[offset : offset + obs_dim]
    std = params[offset + obs_dim : offset + 2 * obs_dim]
    if normalized:
        offset += 2 * obs_dim
    # Two buffers in turn: a layer reads the one its predecessor wrote. Views, not flat offsets: indexing a row
    # view by the loop variable is what lets the compiler vectorise the inner loops (with `params[offset + j]` a
    # 256-wide actor took 11 us instead of 3).
    buffers = (scratch[:widest], scratch[widest : 2 * widest])
    source = buffers[1]
    for layer in range(n_layers):
        fan_in = int(params[sizes_at + layer])
        fan_out = int(params[sizes_at + layer + 1])
        weight = params[offset : offset + fan_in * fan_out].reshape((fan_in, fan_out))
        bias = params[offset + fan_in * fan_out : offset + (fan_in + 1) * fan_out]
        offset += (fan_in + 1) * fan_out
        target = buffers[layer % 2]
        # Sums in float64 (of float32 products), rounded once at the end. Each input adds its weight row to all
        # outputs: a contiguous, vectorised loop.
        for j in range(fan_out):
            target[j] = bias[j]
        if layer == 0:
            # Its own variable, so that it stays float32 (a name numba sees float64 in elsewhere would widen it):
            # float32 products here are what the seed kernel computed, and float32 normalization what
            # NumpyActor.act and the ONNX graph compute.
            for i in range(obs_dim):
                observed = x[i]
                if normalized:
                    observed = (observed - mean[i]) / std[i]
                    if clip > 0.0:
                        if observed > clip:
                            observed = clip
                        elif observed < -clip:
                            observed = -clip
                row = weight[i]
                for j in range(fan_out):
                    target[j] += observed * row[j]
        else:
            for i in range(fan_in):
                value = source[i]
                # A zero input adds nothing: after a relu, about half of the layer is never computed.
                if value != 0.0:
                    for j in range(fan_out):
                        target[j] += value * weight[i, j]
        code = int(params[codes_at + layer])
        if code == 1:  # relu; written so that NaN becomes 0, as the seed kernel's skip of inputs <= 0 did
            for j in range(fan_out):
                if not target[j] > 0.0:
                    target[j] = 0.0
        elif code == 2:
            for j in range(fan_out):
                target[j] = math.tanh(target[j])
        elif code == 3:  # elu, alpha 1
            for j in range(fan_out):
                if target[j] < 0.0:
                    target[j] = math.expm1(target[j])
        elif code == 4:
            for j in range(fan_out):
                if target[j] < 0.0:
                    target[j] *= LEAKY_RELU_SLOPE
        source = target
    tail = params[offset:].reshape((4, act_dim))  # mid, half_range, low, high
    for k in range(act_dim):
        action = source[k] if clip_output else tail[0, k] + math.tanh(source[k]) * tail[1, k]
        # Written so that NaN (from an overflowing pre-activation) lands on `low`: the contract is "within bounds".
        if action > tail[3, k]:
            action = tail[3, k]
        elif not action >= tail[2, k]:
            action = tail[2, k]
        out[k] = action


@functools.cache
def forward_one_kernel() -> ForwardOne:
    """The compiled kernel, `kernel(x, packed, scratch, out)`; compiled once per process, on the first call."""
    from numba import njit  # numba ships no type information (mypy: ignore_missing_imports)

    start = time.perf_counter()
    # An explicit signature compiles now, not on a first call. numba's on-disk cache needs a writable directory:
    # beside this file is not (the api image's user owns nothing there), so it is used only where NUMBA_CACHE_DIR
    # names one, as in the tests, which start many server processes that would each compile again.
    cache = bool(os.environ.get("NUMBA_CACHE_DIR"))
    kernel: ForwardOne = njit(_SIGNATURE, nogil=True, cache=cache)(_forward_one)
    logger.info("compiled the one-observation forward kernel in %.2f s", time.perf_counter() - start)
    return kernel
