"""The sweep runner's Ray: the cluster at RAY_ADDRESS, or a local Ray it starts for a sweep, bound to loopback, and
shuts down once no sweep has run for RAY_IDLE_SHUTDOWN_SECONDS (the next sweep starts it again).

A local Ray is this machine's alone: its GCS, raylet, object manager, workers and agents listen on 127.0.0.1 (as the
API does by default), the dashboard is off, and trials see 127.0.0.1 as their node's address. Ray binds to loopback
only when it believes no cluster can be formed (its macOS and Windows default, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0;
ray.init's `_node_ip_address="127.0.0.1"` alone is turned back into the machine's address). Ray reads that when it is
imported, so it is set before the first import, and every Ray process inherits it. A cluster (RAY_ADDRESS) is
connected to as the cluster recipe says, and stays connected.

Ray's driver installs its own SIGTERM handler (a native one printing a stack trace, then aborting, and a Python one
exiting with code 15), which would turn a requested stop into a crash; the runner's handlers are put back after
ray.init, so SIGTERM and SIGINT keep meaning "stop Tune, shut Ray down, exit 0".
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray's switch between "a node of a possible cluster" (its Linux default: every interface) and "this machine only".
RAY_CLUSTER_SWITCH_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Ray gives its raylet a fixed 30 s to register at start-up; an embedded runner's Ray runs at idle priority, so on a
# machine busy with other work that can run out. A start that failed is cleaned up and tried again before the sweep
# is given up on.
START_ATTEMPTS = 3
START_RETRY_SECONDS = 2.0
# Ray starts one idle worker process per CPU for its first driver, to run plain tasks sooner. A sweep runs nothing
# but Tune's trial actors, and those start processes of their own (with Tune's runtime environment), so the idle
# ones (about half a CPU second each, at every start of the local Ray) would only start and be stopped again.
NO_PRESTART = {"prestart_worker_first_driver": False}


class RayConnection:
    """Connects this process to Ray before a sweep; a local Ray is shut down when idle (`shutdown_if_idle`)."""

    def __init__(self, address: str | None, *, num_cpus: int | None, idle_shutdown_seconds: float) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.idle_shutdown_seconds = idle_shutdown_seconds
        self._idle_since: float | None = None  # monotonic time the last sweep ended; None while one runs

    @property
    def local(self) -> bool:
        return self.address is None

    def connect(self) -> None:
        """Before a sweep: connect to the cluster, or start the local Ray unless it is up."""
        self._idle_since = None
        if self.local:
            os.environ.setdefault(RAY_CLUSTER_SWITCH_ENV, "0")  # before Ray's first import: see the module doc
        import ray

        if ray.is_initialized():
            return
        if self.address is not None:
            logger.info("connecting to the Ray cluster at %s", self.address)
            _keeping_signal_handlers(
                lambda: ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            )
            return
        for attempt in range(1, START_ATTEMPTS + 1):
            logger.info("starting a local Ray on %s (%s CPUs)", LOOPBACK, self.num_cpus or "all")
            try:
                _keeping_signal_handlers(
                    lambda: ray.init(
                        num_cpus=self.num_cpus,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                        _node_ip_address=LOOPBACK,
                        _system_config=NO_PRESTART,
                    )
                )
                break
            except Exception as exc:  # Ray raises a bare Exception for a node that did not come up in time
                ray.shutdown()  # the processes of the failed start, if any are left
                if attempt == START_ATTEMPTS:
                    raise
                logger.warning("the local Ray did not start (%s); trying again (%d/%d)", exc, attempt, START_ATTEMPTS)
                time.sleep(START_RETRY_SECONDS * attempt)
        node_ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        if node_ip != LOOPBACK:  # Ray was imported before connect() could set the switch (an embedding program)
            logger.warning("the local Ray listens on %s, not only on %s", node_ip, LOOPBACK)

    def sweep_ended(self) -> None:
        self._idle_since = time.monotonic()

    def shutdown_if_idle(self) -> None:
        """Between polls of an empty queue: shut the local Ray down once it has been idle long enough."""
        if not self.local or self._idle_since is None:
            return
        idle = time.monotonic() - self._idle_since
        if idle >= self.idle_shutdown_seconds and _ray_running():
            logger.info("no sweep for %.0f s: shutting the local Ray down until the next one", idle)
            self.shutdown()

    def shutdown(self) -> None:
        """Disconnect, and stop the local Ray with its processes; nothing to do when Ray never started."""
        self._idle_since = None
        if _ray_running():
            sys.modules["ray"].shutdown()


def _ray_running() -> bool:
    # Ray is imported with the first sweep only (an idle runner stays light).
    return "ray" in sys.modules and bool(sys.modules["ray"].is_initialized())


def _keeping_signal_handlers(init: Callable[[], object]) -> None:
    """Run ray.init, then give SIGTERM and SIGINT back to the handlers this process had before."""
    if threading.current_thread() is not threading.main_thread():
        init()  # only the main thread can set handlers, and Ray then sets none either
        return
    handlers = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    init()
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)
