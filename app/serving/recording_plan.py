"""What a model's stored recording settings say to the serving path: record or not, the retention limit, and the
exploration (Gaussian noise on a keyed share of sessions) with the noise it draws. The buffers and the flusher that
record the steps are app.serving.experience."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.serving.served_models import session_bucket
from models.registry_vocabulary import SPLIT_BUCKETS

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ExplorePlan:
    """Gaussian noise for `percent` of sessions, chosen by the keyed session hash (the canary's), so every
    process agrees which sessions explore; `scale` is sigma times each dimension's half-range."""

    sigma: float
    percent: float
    threshold: int
    salt: bytes
    scale: FloatArray
    low: FloatArray
    high: FloatArray

    def explores(self, session: str) -> bool:
        return self.threshold > 0 and session_bucket(self.salt, session) < self.threshold


@dataclass(frozen=True, slots=True)
class RecordingPlan:
    """A model that records: its limit and its exploration (None: the policy's actions as they are)."""

    max_transitions: int
    explore: ExplorePlan | None


def recording_plan(settings: dict[str, object] | None, spaces: dict[str, object]) -> RecordingPlan | None:
    """The plan for a model's stored settings (store.experience.set_settings); None when it does not record."""
    if not settings or not settings.get("record"):
        return None
    explore = settings.get("explore")
    plan = None
    if isinstance(explore, dict) and explore.get("sigma") and explore.get("percent"):
        low = np.asarray(spaces["action_low"], np.float32)
        high = np.asarray(spaces["action_high"], np.float32)
        sigma, percent = float(explore["sigma"]), float(explore["percent"])
        plan = ExplorePlan(
            sigma,
            percent,
            round(percent * SPLIT_BUCKETS / 100),
            str(explore.get("salt", "")).encode(),
            (sigma * (high - low) / 2).astype(np.float32),
            low,
            high,
        )
    return RecordingPlan(int(str(settings.get("max_transitions", 0))), plan)


# Exploration noise: a generator of this process (not a secret, not reproducible: each step's noise is recorded).
_NOISE = np.random.default_rng()


def explore_noise(plan: ExplorePlan, action: list[float]) -> tuple[list[float], FloatArray]:
    """The policy's action plus Gaussian noise, clipped to the action bounds, and the noise drawn (float32
    throughout; minimum/maximum rather than np.clip, whose dispatch costs more than the arithmetic here)."""
    noise = _NOISE.standard_normal(len(action), np.float32) * plan.scale
    noisy = np.minimum(np.maximum(np.asarray(action, np.float32) + noise, plan.low), plan.high)
    return noisy.tolist(), noise
