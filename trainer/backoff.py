"""Waiting out an unreachable database: which errors count as that, and exponential backoff with jitter."""

from __future__ import annotations

import random

from sqlalchemy.exc import InterfaceError, OperationalError

# Connectivity problems: worth waiting out. Anything else is a bug and should surface.
DB_UNAVAILABLE = (OperationalError, InterfaceError)
MAX_BACKOFF_SECONDS = 30.0


class Backoff:
    """Exponential backoff with jitter (so a fleet of workers does not reconnect in lockstep)."""

    def __init__(self, initial: float = 0.5, maximum: float = MAX_BACKOFF_SECONDS) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self._initial
