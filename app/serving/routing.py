"""`Routing`: the per-process state that routes a POST /act by model, rollout and session.

Built once by the lifespan and read by every routed request (app.serving.routed_act), the WebSocket stream and the
runtime's default path; what each model serves and the canary split are in app.serving.served_models.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.infra.metrics import Metrics
from app.serving.experience import ExperienceRecorder
from app.serving.live_returns import LiveReturns
from app.serving.policy_cache import PolicyCache
from app.serving.sessions import SessionTable
from app.serving.shadow import ShadowComparisons


@dataclass(frozen=True, slots=True)
class Routing:
    """The per-process state of models, sessions and rollouts, built once by the lifespan."""

    default_model: str
    cache: PolicyCache
    metrics: Metrics
    sessions: SessionTable
    live: LiveReturns
    shadow: ShadowComparisons
    # Recording of session steps for the models that record (app.serving.experience).
    experience: ExperienceRecorder
