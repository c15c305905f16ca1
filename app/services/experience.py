"""A model's recorded experience over the API: its recording settings (every API process follows them within one
registry poll), its totals, and clearing it."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.schemas.experience import ArmReturns, ExperienceIn, ExperienceOut, ExploreOut, PolicyTransitions
from app.services.model_registry import model_or_404
from app.services.promotion import committed_then_refreshed
from app.serving.policy_cache import PolicyCache
from models.experience_chunks import NO_POLICY
from store import experience
from store.chunk_storage import ChunkStorage, delete_after_commit
from store.tables.registry import Model

DEFAULT_MAX_TRANSITIONS = 1_000_000


def stored_settings(body: ExperienceIn, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The settings as stored: the body, plus the explore split's salt (kept across updates, so raising the
    percentage only adds sessions to the exploring side)."""
    settings: dict[str, Any] = {"record": body.record, "max_transitions": body.max_transitions, "explore": None}
    if body.explore is not None:
        old = (previous or {}).get("explore") or {}
        salt = old.get("salt") or secrets.token_hex(8)
        settings["explore"] = {**body.explore.model_dump(), "salt": salt}
    return settings


def experience_out(session: Session, model: Model) -> ExperienceOut:
    settings = model.experience or {}
    explore = settings.get("explore")
    totals = experience.totals(session, model.id)
    returns = []
    for arm in ("policy", "explore"):
        episodes, total, total_sq = totals.returns.get(arm, [0, 0.0, 0.0])
        count = int(episodes)
        mean = total / count if count else None
        std = math.sqrt(max(total_sq / count - mean * mean, 0.0)) if mean is not None else None
        returns.append(ArmReturns(arm=arm, episodes=count, mean_return=mean, std_return=std))
    return ExperienceOut(
        model=model.name,
        record=bool(settings.get("record", False)),
        max_transitions=int(settings.get("max_transitions", DEFAULT_MAX_TRANSITIONS)),
        explore=None if not explore else ExploreOut(**{k: explore[k] for k in ("noise", "sigma", "percent")}),
        transitions=totals.transitions,
        episodes=totals.episodes,
        chunks=totals.chunks,
        bytes=totals.size_bytes,
        dropped=model.experience_dropped,
        oldest=_time(totals.oldest),
        newest=_time(totals.newest),
        per_policy=[
            PolicyTransitions(policy_id=None if policy == NO_POLICY else policy, transitions=count)
            for policy, count in sorted(totals.per_policy.items())
        ],
        returns=returns,
    )


def _time(unix: float | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


def get(session: Session, name: str) -> ExperienceOut:
    return experience_out(session, model_or_404(session, name))


async def put(
    session: Session, cache: PolicyCache, name: str, body: ExperienceIn, storage: ChunkStorage | None = None
) -> ExperienceOut:
    """Store the settings; this process follows them at once, the others within one registry poll. Chunks a lower
    limit removes lose their bytes in `storage` (EXPERIENCE_URL) after the commit."""

    def write() -> ExperienceOut:
        model = model_or_404(session, name)
        removed = experience.set_settings(session, model, stored_settings(body, model.experience))
        result = experience_out(session, model)  # before the commit, as in model_registry.create_model
        session.commit()
        delete_after_commit(storage, removed)
        return result

    return await committed_then_refreshed(cache, write)


def delete(session: Session, name: str, storage: ChunkStorage | None = None) -> None:
    """Delete every stored chunk of the model (their bytes in `storage` too) and its dropped count (the settings
    stay)."""
    model = model_or_404(session, name)
    removed = experience.clear(session, model)
    session.commit()
    delete_after_commit(storage, removed)
