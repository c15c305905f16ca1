"""What a stored policy is served as besides its weights: an episode as a GIF and the actor as ONNX, each built once
per policy and kept per app (bounded), with the errors of building them as API errors.

A stored policy never changes (its bytes have a sha256), so neither file goes stale; both are keyed by that hash,
so a changed file can never be answered with another file's GIF or model.
"""

from __future__ import annotations

import hashlib

from app.infra.errors import ApiError
from app.infra.lru import LruCache
from models.episode_gif import RenderUnavailableError, episode_gif_for_weights
from models.onnx_export import safetensors_to_onnx
from models.weights import WeightsFormatError
from store.tables.registry import Policy

# A few dozen GIFs of ~100 kB, and as many ONNX models of a few hundred kB: the memory an API process spends here.
GIF_CACHE_SIZE = 32
ONNX_CACHE_SIZE = 32
# One fixed episode per policy: a seed parameter would let clients fill the GIF cache with one-offs.
GIF_SEED = 0


class PolicyFiles:
    """The GIFs and ONNX models this app has built, least recently used dropped first (app.state.policy_files)."""

    def __init__(self, gif_entries: int = GIF_CACHE_SIZE, onnx_entries: int = ONNX_CACHE_SIZE) -> None:
        self._gifs: LruCache[tuple[str, int], bytes] = LruCache(gif_entries)
        self._onnx: LruCache[str, bytes] = LruCache(onnx_entries)

    def episode_gif(self, policy_id: int, weights: bytes) -> bytes:
        """One episode of the policy as an animated GIF (about a second to render on a miss: call from a thread)."""
        key = (hashlib.sha256(weights).hexdigest(), GIF_SEED)
        try:
            return self._gifs.get_or_build(key, lambda: episode_gif_for_weights(weights, seed=GIF_SEED))
        except RenderUnavailableError as exc:
            raise ApiError(503, "render_unavailable", str(exc)) from None
        except WeightsFormatError:
            raise ApiError(503, "policy_unavailable", f"policy {policy_id} has invalid stored weights") from None
        except ValueError as exc:  # e.g. a policy whose dimensions do not fit its own environment
            raise ApiError(422, "not_renderable", f"policy {policy_id} cannot be rendered: {exc}") from None

    def actor_onnx(self, policy: Policy) -> bytes:
        """The policy's actor as an ONNX model; 409 when the stored bytes are not the ones registered (tampered or
        truncated in storage) or the strict loader rejects them: never a model of other bytes."""
        digest = hashlib.sha256(policy.weights).hexdigest()
        if digest != policy.sha256:
            message = f"stored weights hash to {digest[:12]}..., recorded {policy.sha256[:12]}..."
            raise _corrupt(policy.id, message)
        try:
            return self._onnx.get_or_build(digest, lambda: safetensors_to_onnx(policy.weights))
        except WeightsFormatError as exc:
            raise _corrupt(policy.id, str(exc)) from None


def _corrupt(policy_id: int, reason: str) -> ApiError:
    return ApiError(409, "policy_corrupt", f"policy {policy_id}'s stored weights are invalid: {reason}")
