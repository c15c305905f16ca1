"""A bounded, thread-safe least-recently-used map whose values are built on a miss: what the app keeps per policy.

One instance hangs off the app's state per kind of thing kept (never a module global), so its bound is the
app's memory budget for it and a test's fresh app starts empty.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `max_entries` values, the least recently used dropped first; safe from the thread pool's threads."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max_entries = max_entries
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """The value kept for `key`, or `build()`'s, kept. Built outside the lock: one slow build (a GIF takes about
        a second) must not hold up the answers already kept; two threads missing the same key at once both build."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = build()
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self._max_entries:
                self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)
