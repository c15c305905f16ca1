"""A small thread pool of its own for the work no client load may delay: the readiness ping and the policy refresh.

Everything else that leaves the event loop shares asyncio's default executor (min(32, CPUs + 4) threads: 6 on two
cores). When clients filled it (400 idle event streams polling through it once did), `/readyz` answered 503
"database not reachable" on a healthy database and a promotion took seconds to reach `/act`. Two threads here,
held by the process's lifespan, are enough: each task is one short query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CONTROL_THREADS = 2


class ControlThreads:
    """The control executor, and one shared call in flight per key (a hung database must not queue a ping per
    /readyz request in front of the policy refresh)."""

    def __init__(self, workers: int = CONTROL_THREADS) -> None:
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="control")
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    async def run(self, function: Callable[[], T]) -> T:
        """`function()` on a control thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function)

    async def run_shared(self, key: str, function: Callable[[], T]) -> T:
        """`function()` on a control thread, or the call already in flight under `key`: its answer. A caller that
        gives up waiting (a timeout) leaves the call running for the others."""
        future = self._in_flight.get(key)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(self.executor, function)
            self._in_flight[key] = future
            future.add_done_callback(lambda _: self._in_flight.pop(key, None))
        result: T = await asyncio.shield(future)
        return result

    def shutdown(self) -> None:
        """Stop taking work; a call still running ends on its own (a thread cannot be interrupted)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
