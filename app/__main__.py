"""`python -m app`: the one-command run (app.launcher): database, embedded worker and sweep runner, uvicorn."""

from __future__ import annotations

import gc
import os
import sys


def main() -> int:
    """Set the process environment, then hand over to the launcher; the exit status."""
    # One BLAS thread per process. A threaded OpenBLAS made a 1024-observation /act ~10x slower (its threads spin
    # against the event loop, the other worker processes and the trainer on a small machine), and concurrency here
    # comes from uvicorn worker processes, not from threads inside one forward pass. OpenBLAS reads this once, when
    # numpy loads it, so it is set before the import below, the first that loads numpy (via models and store);
    # here rather than at module level so that importing this module changes nothing. The uvicorn workers are
    # spawned processes that inherit this environment, so each of them loads its BLAS with one thread too.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from app.launcher import run

    return run()


if __name__ == "__main__":
    code = main()
    # Everything left is freed by the process's exit: the cycle collector need not walk it first.
    gc.freeze()
    sys.exit(code)
