"""The settings and the command line the job worker and the sweep runner share.

Each reads its own settings class (store.settings.ProcessSettings: DATABASE_URL, DATA_DIR, DEFAULT_MODEL, LOG_LEVEL,
RAY_ADDRESS, MLFLOW_*) once at start; the flags they share take their defaults from it, and a bad value, from the
environment or a flag, stops the process with one line naming it.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import threading
from types import FrameType
from typing import Any, TypeVar

from pydantic import Field

from store.settings import ProcessSettings, load_settings, with_flags

SettingsT = TypeVar("SettingsT", bound=ProcessSettings)
# A local Ray costs ~5 s to start and ~550 MB idle: kept for a few minutes, sweeps queued in a row share one.
DEFAULT_RAY_IDLE_SHUTDOWN_SECONDS = 300.0


class WorkerSettings(ProcessSettings):
    """`python -m trainer worker`: where the queue is, which model is the default, where jobs are tracked."""


class LearnerProcessSettings(ProcessSettings):
    """`python -m trainer learner`: where the learners' queue and the recorded experience are, and how soon a learner
    whose process died is taken over."""

    learner_lease_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="The lease of a claimed learner (the default of --lease-seconds): a learner whose process died "
        "is taken over by another within about this long.",
    )


class SweepRunnerSettings(ProcessSettings):
    """`python -m trainer sweeps`: where the queue is, the Ray cluster trials run on, and how long a local Ray may
    stay idle."""

    ray_idle_shutdown_seconds: float = Field(
        DEFAULT_RAY_IDLE_SHUTDOWN_SECONDS,
        ge=0,
        description="Without RAY_ADDRESS: seconds without a sweep after which the local Ray the runner started is "
        "shut down (its processes hold about 550 MB); the next sweep starts it again. 0: right after each sweep.",
    )


def claimer_parser(
    cls: type[SettingsT], command: str, description: str, *, holder: str, row: str
) -> tuple[SettingsT, argparse.ArgumentParser]:
    """The settings of `python -m trainer <command>` (a process that claims leased rows: "job", "sweep", held by a
    "worker", a "runner") and its parser with the shared flags, whose defaults are those settings."""
    settings = load_settings(cls)
    parser = argparse.ArgumentParser(prog=f"python -m trainer {command}", description=description)
    parser.add_argument(
        "--database-url",
        default=settings.database_url,
        help="SQLAlchemy URL (default: $DATABASE_URL, else sqlite under $DATA_DIR or ./data)",
    )
    parser.add_argument(
        "--ray-address",
        default=settings.ray_address,
        help="the Ray cluster to run on (default: $RAY_ADDRESS; unset: start a local Ray)",
    )
    parser.add_argument(f"--{holder}-id", default=None, help=f"name in the {row}s table (default: host-pid-random)")
    parser.add_argument("--lease-seconds", type=positive_float, default=30.0, help=f"{row} lease length (default 30)")
    parser.add_argument(
        "--poll-interval", type=positive_float, default=1.0, help="seconds between polls of an empty queue"
    )
    parser.add_argument("--once", action="store_true", help=f"run at most one {row}, then exit")
    return settings, parser


def parse_flags(
    settings: SettingsT, parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[SettingsT, argparse.Namespace, dict[str, Any]]:
    """The settings with the shared flags applied (validated as the environment's are), the parsed command line,
    and the shared options (database_url, ray_address, lease_seconds, poll_interval, once) for the options class."""
    args = parser.parse_args(argv)
    settings = with_flags(settings, database_url=args.database_url, ray_address=args.ray_address)
    shared = {
        "database_url": settings.database_url,
        "ray_address": settings.ray_address,
        "lease_seconds": args.lease_seconds,
        "poll_interval": args.poll_interval,
        "once": args.once,
    }
    return settings, args, shared


def default_holder_id() -> str:
    """host-pid-random: unique across machines, restarts and PID reuse."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def start_process(settings: ProcessSettings, what: str) -> threading.Event:
    """Logging at LOG_LEVEL, and SIGTERM / SIGINT setting the returned event (`what` says what happens then)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
        )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise here
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("received %s: %s", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
