"""Forward-pass benchmark: one observation through the actor, in-process, by each route the project has.

    python bench/forward_bench.py                    # hidden sizes 16, 64, 256, 1024, then the general shapes
    python bench/forward_bench.py --hidden 64 --calls 200000 --no-general

Routes, measured side by side in one run (best of `--repeats`, microseconds per call):
- `act_one`: the compiled kernel (models/fused.py), what POST /act runs for one observation;
- `act`: numpy, the same arithmetic as separate calls (what the trainer's evaluation runs);
- `act, batch of 1024`: numpy's BLAS on a batch, per observation;
- torch: the trainer's own Actor on one observation, under no_grad, one thread (when torch is installed).

Rows: the seed Actor (`ddpg-actor/1`: relu, relu, tanh_scale) at each `--hidden` width, then two policies of the
general format (models.policy_format): a TD3-like actor (17 -> 400 -> 300 -> 6, relu, tanh_scale; SB3's TD3
default net_arch on a HalfCheetah-sized env) and a PPO-like one (8 -> 64 -> 64 -> 2, tanh, clip, with
VecNormalize-style observation normalization).

Numbers are printed, never asserted. The server adds its own overhead around these (bench/serve_bench.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/forward_bench.py` from the repository root
    sys.path.insert(0, str(REPO))

from models.policy import NumpyActor  # noqa: E402
from models.random_actor import random_actor_bytes, random_policy_weights  # noqa: E402
from models.weights import encode_policy  # noqa: E402

logger = logging.getLogger("forward_bench")
BATCH = 1024


def microseconds_per_call(call: Callable[[], object], calls: int, repeats: int) -> float:
    call()
    return min(timeit.repeat(call, number=calls, repeat=repeats)) / calls * 1e6


def torch_route(weights: bytes) -> Callable[[np.ndarray], object] | None:
    """The policy in torch: normalization, an nn.Sequential of its layers, the output transform (one thread)."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    from models.policy_types import LEAKY_RELU_SLOPE, Activation, OutputTransform

    torch.set_num_threads(1)
    policy = NumpyActor.from_bytes(weights).weights
    modules: list[nn.Module] = []
    activations = {
        Activation.RELU: nn.ReLU,
        Activation.TANH: nn.Tanh,
        Activation.ELU: nn.ELU,
        Activation.LEAKY_RELU: lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
    }
    for layer in policy.layers:
        linear = nn.Linear(layer.in_features, layer.out_features)
        linear.load_state_dict({"weight": torch.from_numpy(layer.weight), "bias": torch.from_numpy(layer.bias)})
        modules.append(linear)
        if layer.activation is not None:
            modules.append(activations[Activation(layer.activation)]())
    network = nn.Sequential(*modules).eval()
    norm = policy.obs_normalization
    mean = None if norm is None else torch.from_numpy(norm.mean)
    std = None if norm is None else torch.from_numpy(norm.std())
    clip = None if norm is None else norm.clip
    low, high = torch.from_numpy(policy.action_low), torch.from_numpy(policy.action_high)
    mid, half_range = (high + low) / 2, (high - low) / 2
    tanh_output = policy.output == OutputTransform.TANH_SCALE

    def forward(observation: np.ndarray) -> object:
        with torch.no_grad():
            x = torch.from_numpy(observation).unsqueeze(0)
            if mean is not None and std is not None:
                x = (x - mean) / std
                if clip is not None:
                    x = torch.clamp(x, -clip, clip)
            y = network(x)
            if tanh_output:
                y = mid + torch.tanh(y) * half_range
            return torch.maximum(torch.minimum(y, high), low)

    return forward


def general_policies() -> list[tuple[str, bytes]]:
    """The TD3-like and PPO-like rows' policies."""
    td3 = random_policy_weights(0, sizes=(17, 400, 300, 6), activations=["relu", "relu"], output="tanh_scale")
    ppo = random_policy_weights(0, sizes=(8, 64, 64, 2), activations=["tanh", "tanh"], output="clip", normalized=True)
    return [
        ("TD3-like 17-400-300-6 relu, tanh_scale", encode_policy(td3)),
        ("PPO-like 8-64-64-2 tanh, clip, normalized", encode_policy(ppo)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 64, 256, 1024], help="seed Actor widths")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per route; the best is reported")
    parser.add_argument("--no-general", action="store_true", help="only the seed Actor rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = [
        (
            f"seed Actor 3-{hidden}-{hidden}-1",
            random_actor_bytes(0, hidden_size=hidden, weight_scale=None, bias_scale=0.1),
        )
        for hidden in args.hidden
    ]
    if not args.no_general:
        rows += general_policies()
    logger.info(
        "| policy | act_one (compiled) us | act (numpy) us | torch us | batch of %d, us/obs | numpy / compiled |", BATCH
    )
    logger.info("|---|---:|---:|---:|---:|---:|")
    for label, weights in rows:
        actor = NumpyActor.from_bytes(weights)
        actor.warm_up()
        batch = np.random.default_rng(0).normal(size=(BATCH, actor.obs_dim)).astype(np.float32)
        observation = (
            np.array([0.3, -0.8, 1.5], dtype=np.float32)  # the seed rows' observation since this benchmark began
            if actor.obs_dim == 3
            else np.random.default_rng(1).normal(size=actor.obs_dim).astype(np.float32)
        )
        widest = max(actor.weights.hidden_sizes, default=64)
        calls = max(args.calls * 64 // max(widest, 64), 200)  # wide actors: fewer calls, similar time per timing
        compiled = microseconds_per_call(partial(actor.act_one, observation), calls, args.repeats)
        numpy_one = microseconds_per_call(partial(actor.act, observation), calls, args.repeats)
        batched = microseconds_per_call(partial(actor.act, batch), max(calls // 100, 20), args.repeats) / BATCH
        forward = torch_route(weights)
        torch_one = (
            "n/a"
            if forward is None
            else f"{microseconds_per_call(partial(forward, observation), calls, args.repeats):.2f}"
        )
        logger.info(
            "| %s | %.2f | %.2f | %s | %.3f | %.1fx |",
            label,
            compiled,
            numpy_one,
            torch_one,
            batched,
            numpy_one / compiled,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
