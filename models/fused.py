"""One observation through the actor in one compiled call: the /act hot path's forward pass.

Why not numpy: for one observation of the default preset's actor (3 -> 64 -> 64 -> 1) the arithmetic is a few
thousand multiply-adds, while each numpy call costs about half a microsecond of dispatch, and the forward pass
needs at least seven of them. Measured under the server (bench/serve_bench.py), those calls were most of
what /act costs beyond parsing its body; this kernel does the whole pass, squashing and clipping included, in
one call of about half a microsecond. Batches keep numpy's BLAS (`NumpyActor.act`), which wins there.

The weights travel as one flat float32 array (`pack_actor`): every array argument costs the compiled
function's dispatcher ~70 ns to check, so the kernel takes four. The packed array starts with its own
dimensions, and the kernel checks every array's size against them before reading anything: numba does not
bounds-check, so a mismatch must be a ValueError, never a read past the end.

numba is imported and the kernel compiled (~0.5 s) on first use, not at import: the trainer and the CLI load
this package without serving one observation at a time.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
ForwardOne = Callable[[FloatArray, FloatArray, FloatArray, FloatArray], None]

HEADER_SIZE = 3  # obs_dim, hidden_size, act_dim, stored as floats (exact in float32 far beyond any real width)
_SIGNATURE = "void(float32[::1], float32[::1], float64[::1], float32[::1])"


def packed_size(obs_dim: int, hidden_size: int, act_dim: int) -> int:
    """Length of `pack_actor`'s array: header, three layers with their biases, then mid/half-range/low/high."""
    layers = (obs_dim + 1) * hidden_size + (hidden_size + 1) * hidden_size + (hidden_size + 1) * act_dim
    return HEADER_SIZE + layers + 4 * act_dim


def pack_actor(
    layers: list[tuple[FloatArray, FloatArray]], action_low: FloatArray, action_high: FloatArray
) -> FloatArray:
    """The kernel's parameter array from three (weight (in, out), bias (out,)) layers and the action bounds.

    Weights are stored input-major (the torch Linear's W.T): the kernel adds one input's row to all outputs at
    a time, a contiguous multiply-add the compiler vectorises, and skips the rows of inputs that relu zeroed.
    """
    (w1, _), (w2, _), (w3, _) = layers
    obs_dim, hidden_size = w1.shape
    act_dim = w3.shape[1]
    if w2.shape != (hidden_size, hidden_size) or w3.shape != (hidden_size, act_dim):
        raise ValueError(f"layer shapes {w1.shape}, {w2.shape}, {w3.shape} do not chain")
    low = np.asarray(action_low, np.float32)
    high = np.asarray(action_high, np.float32)
    parts: list[npt.ArrayLike] = [np.array([obs_dim, hidden_size, act_dim], np.float32)]
    for weight, bias in layers:
        parts += [np.asarray(weight, np.float32).ravel(), np.asarray(bias, np.float32)]
    # low + (tanh + 1) / 2 * (high - low) == mid + tanh * half_range, one multiply-add fewer.
    parts += [(high + low) / 2, (high - low) / 2, low, high]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _forward_one(x: Any, params: Any, scratch: Any, out: Any) -> None:  # pragma: no cover - runs compiled
    """out = clip(mid + tanh(W3 relu(W2 relu(W1 x + b1) + b2) + b3) * half_range, low, high); scratch: 2 * hidden."""
    obs_dim = int(params[0])
    hidden = int(params[1])
    act_dim = int(params[2])
    # packed_size, inlined: the compiled kernel cannot call a plain Python function.
    expected = HEADER_SIZE + (obs_dim + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * act_dim + 4 * act_dim
    if params.shape[0] != expected or x.shape[0] != obs_dim or out.shape[0] != act_dim or scratch.shape[0] < 2 * hidden:
        raise ValueError("array sizes do not match the packed actor")
    # Views, not flat offsets: indexing a row view by the loop variable is what lets the compiler vectorise the
    # inner loops (with `params[offset + j]` a 256-wide actor took 11 us instead of 3).
    end_w1 = HEADER_SIZE + obs_dim * hidden
    end_w2 = end_w1 + hidden + hidden * hidden
    end_w3 = end_w2 + hidden + hidden * act_dim
    w1 = params[HEADER_SIZE:end_w1].reshape((obs_dim, hidden))
    b1 = params[end_w1 : end_w1 + hidden]
    w2 = params[end_w1 + hidden : end_w2].reshape((hidden, hidden))
    b2 = params[end_w2 : end_w2 + hidden]
    w3 = params[end_w2 + hidden : end_w3].reshape((hidden, act_dim))
    b3 = params[end_w3 : end_w3 + act_dim]
    tail = params[end_w3 + act_dim :].reshape((4, act_dim))  # mid, half_range, low, high
    # h1 and h2 hold pre-activations (in float64: sums of float32 products, rounded once at the end). relu is
    # applied where they are read, by skipping inputs <= 0 (which contribute nothing): about half of layers 2
    # and 3 is never computed. Each input adds its weight row to all outputs: a contiguous, vectorised loop.
    h1 = scratch[:hidden]
    h2 = scratch[hidden : 2 * hidden]
    for j in range(hidden):
        h1[j] = b1[j]
    for i in range(obs_dim):
        value = x[i]
        row = w1[i]
        for j in range(hidden):
            h1[j] += value * row[j]
    for j in range(hidden):
        h2[j] = b2[j]
    for i in range(hidden):
        value = h1[i]
        if value > 0.0:
            row = w2[i]
            for j in range(hidden):
                h2[j] += value * row[j]
    for k in range(act_dim):
        total = np.float64(b3[k])
        for i in range(hidden):
            value = h2[i]
            if value > 0.0:
                total += value * w3[i, k]
        action = tail[0, k] + math.tanh(total) * tail[1, k]
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
