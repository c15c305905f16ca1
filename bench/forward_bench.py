"""Forward-pass benchmark: one observation through the actor, in-process, by each route the project has.

    python bench/forward_bench.py                    # hidden sizes 16, 64, 256, 1024
    python bench/forward_bench.py --hidden 64 --calls 200000

Routes, measured side by side in one run (best of `--repeats`, microseconds per call):
- `act_one`: the compiled kernel (models/fused.py), what POST /act runs for one observation;
- `act`: numpy, the same arithmetic as separate calls (what the trainer's evaluation runs);
- `act, batch of 1024`: numpy's BLAS on a batch, per observation;
- torch: the trainer's own Actor on one observation, under no_grad, one thread (when torch is installed).

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
from models.random_actor import random_actor_bytes  # noqa: E402

logger = logging.getLogger("forward_bench")
BATCH = 1024


def microseconds_per_call(call: Callable[[], object], calls: int, repeats: int) -> float:
    call()
    return min(timeit.repeat(call, number=calls, repeat=repeats)) / calls * 1e6


def torch_route(weights: bytes) -> Callable[[np.ndarray], object] | None:
    try:
        import torch
    except ImportError:
        return None
    from models.networks import Actor

    torch.set_num_threads(1)
    numpy_actor = NumpyActor.from_bytes(weights)
    actor = Actor(numpy_actor.obs_dim, numpy_actor.weights.hidden_size, numpy_actor.act_dim)
    actor.load_state_dict({name: torch.from_numpy(array) for name, array in numpy_actor.weights.tensors.items()})
    actor.eval()

    def forward(observation: np.ndarray) -> object:
        with torch.no_grad():
            return actor(torch.from_numpy(observation).unsqueeze(0))

    return forward


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 64, 256, 1024], help="actor widths")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per route; the best is reported")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    observation = np.array([0.3, -0.8, 1.5], dtype=np.float32)
    batch = np.random.default_rng(0).normal(size=(BATCH, 3)).astype(np.float32)
    logger.info(
        "| hidden | act_one (compiled) us | act (numpy) us | torch us | batch of %d, us/obs | numpy / compiled |", BATCH
    )
    logger.info("|---:|---:|---:|---:|---:|---:|")
    for hidden in args.hidden:
        weights = random_actor_bytes(0, hidden_size=hidden, weight_scale=None, bias_scale=0.1)
        actor = NumpyActor.from_bytes(weights)
        actor.warm_up()
        calls = max(args.calls * 64 // max(hidden, 64), 200)  # wide actors: fewer calls, similar time per timing
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
            "| %d | %.2f | %.2f | %s | %.3f | %.1fx |",
            hidden,
            compiled,
            numpy_one,
            torch_one,
            batched,
            numpy_one / compiled,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
