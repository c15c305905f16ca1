"""ONNX models of stored policies, built once per policy (by content hash) and kept in a small LRU cache.

Building is torch-free (`models.onnx_export`) and takes milliseconds, but a download loop or a fleet pulling the
same policy should not rebuild it each time. Keys are the weights' sha256, so a changed file can never be answered
with another file's model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from models.onnx_export import safetensors_to_onnx

MAX_CACHED_MODELS = 32


class StoredWeightsMismatchError(ValueError):
    """The stored bytes do not hash to the sha256 the registry recorded for them: they were altered."""


class OnnxCache:
    """sha256 of the weights -> ONNX bytes, least recently used dropped first; safe from several threads."""

    def __init__(self, max_entries: int = MAX_CACHED_MODELS) -> None:
        self._max_entries = max_entries
        self._models: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def model_for(self, weights: bytes, expected_sha256: str) -> bytes:
        """The ONNX model of `weights`; StoredWeightsMismatchError if they are not the recorded bytes, and
        models.weights.WeightsFormatError if the strict loader rejects them."""
        digest = hashlib.sha256(weights).hexdigest()
        if digest != expected_sha256:
            raise StoredWeightsMismatchError(
                f"stored weights hash to {digest[:12]}..., recorded {expected_sha256[:12]}..."
            )
        with self._lock:
            cached = self._models.get(digest)
            if cached is not None:
                self._models.move_to_end(digest)
                return cached
        model = safetensors_to_onnx(weights)  # outside the lock: one slow build must not hold up cached answers
        with self._lock:
            self._models[digest] = model
            self._models.move_to_end(digest)
            while len(self._models) > self._max_entries:
                self._models.popitem(last=False)
        return model
