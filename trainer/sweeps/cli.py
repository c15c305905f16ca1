"""`python -m trainer sweeps`: the sweep runner's command line."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from store.db import default_database_url

if TYPE_CHECKING:
    from trainer.sweeps.runner import RunnerOptions


def parse_args(argv: list[str] | None = None) -> RunnerOptions:
    from trainer.sweeps.runner import RunnerOptions

    parser = argparse.ArgumentParser(
        prog="python -m trainer sweeps", description="Run queued hyperparameter sweeps on Ray Tune."
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or default_database_url(Path(os.environ.get("DATA_DIR") or "data")),
        help="SQLAlchemy URL (default: $DATABASE_URL, else sqlite under $DATA_DIR or ./data)",
    )
    parser.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="the Ray cluster to run trials on (default: $RAY_ADDRESS; unset: start a local Ray)",
    )
    parser.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--runner-id", default=None, help="name in the sweeps table (default: host-pid-random)")
    parser.add_argument("--lease-seconds", type=_positive_float, default=30.0, help="sweep lease length (default 30)")
    parser.add_argument("--poll-interval", type=_positive_float, default=1.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="run at most one sweep, then exit")
    args = parser.parse_args(argv)
    return RunnerOptions(
        database_url=args.database_url,
        runner_id=args.runner_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        lease_seconds=args.lease_seconds,
        poll_interval=args.poll_interval,
        once=args.once,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("LOG_LEVEL", "INFO"),
            format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
        )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from trainer.sweeps.runner import SweepRunner

    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return SweepRunner(options, stop=stop).run()


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
