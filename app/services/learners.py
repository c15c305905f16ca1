"""Online learners over the API: validated like POST /train before anything is stored, started with recording and
exploration turned on for the model if they are off, and shown with their progress and published policies."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.infra.errors import ApiError, field_error
from app.schemas.experience import ExperienceIn, ExploreIn, ExploreOut
from app.schemas.learners import CanaryOut, LearnerIn, LearnerOut, PublishedPolicyOut
from app.services.budget import check_training_budget
from app.services.experience import stored_settings
from app.services.model_registry import model_or_404
from app.services.promotion import committed_then_refreshed
from app.serving.policy_cache import PolicyCache
from app.settings import Settings
from models.training_config import TrainingConfig, load_job_config
from store import experience, learners
from store.tables.registry import Model
from store.tables.serving_records import ExperienceChunk, LiveReturn
from store.tables.work_queues import Learner, LearnerPublication

# The shortest span a rate is measured over: the publish written with the progress is microseconds older than it.
RATE_MIN_SECONDS = 1.0


def _resolve(body: LearnerIn) -> TrainingConfig:
    try:
        return body.resolved_config()
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


def _stored_explore(settings: dict[str, object]) -> ExploreIn | None:
    stored = settings.get("explore")
    if not isinstance(stored, dict):
        return None
    return ExploreIn.model_validate({key: stored[key] for key in ("noise", "sigma", "percent")})


def _check_bounds(model: Model) -> None:
    spaces = model.spaces
    low, high = spaces.get("action_low") or [], spaces.get("action_high") or []
    finite = all(isinstance(v, int | float) for v in [*low, *high]) and all(
        a < b for a, b in zip(low, high, strict=False)
    )
    if not finite or not low:
        raise field_error("name", f"model {model.name!r} needs finite action bounds with low < high to learn")


async def put(
    session: Session, cache: PolicyCache, settings: Settings, name: str, body: LearnerIn, *, replace: bool = False
) -> LearnerOut:
    """Start (or, with `replace`, replace) the model's learner; 422 naming the field before anything is stored, 409
    when the model already has a live learner and `replace` is not set."""
    config = _resolve(body)
    given = body.trainer_config().keys()
    check_training_budget(config, settings, preset=body.preset, given=given)

    def write() -> LearnerOut:
        model = model_or_404(session, name)
        _check_bounds(model)
        live = learners.live_learner(session, model.id)
        if live is not None and not replace:
            message = (
                f"model {name!r} already has a learner (id {live.id}, {live.status}): "
                "PUT with ?replace=true to replace it (it hands over its checkpoint), or DELETE it first"
            )
            raise ApiError(409, "conflict", message, details=[{"field": "replace", "message": message}])
        current = model.experience or {}
        if not current.get("record") or not current.get("explore"):
            explore = body.explore or ExploreIn(sigma=config.noise_sigma, percent=100.0)
            wanted = ExperienceIn(
                record=True,
                max_transitions=int(current.get("max_transitions", body.max_transitions)),
                explore=_stored_explore(current) or explore,
            )
            experience.set_settings(session, model, stored_settings(wanted, model.experience))
        canary = body.canary.model_dump() if body.publish == "canary" else None
        learner = learners.start_learner(
            session,
            model,
            config=body.trainer_config(),
            publish_every=body.publish_every,
            publish=body.publish,
            canary=canary,
            exploration=(model.experience or {}).get("explore"),
        )
        session.flush()
        out = learner_out(session, model, learner)
        session.commit()
        return out

    return await committed_then_refreshed(cache, write)


def get(session: Session, name: str, *, unflushed: Callable[[int], int] | None = None) -> LearnerOut:
    """The model's latest learner; `unflushed(model_id)`: the transitions this process recorded for the model and has
    not written yet (its experience recorder's count), part of a live learner's unlearned transitions."""
    model = model_or_404(session, name)
    learner = learners.latest_learner(session, model.id)
    if learner is None:
        raise _no_learner(model)
    live = learner.status in ("queued", "running")
    return learner_out(session, model, learner, unflushed=unflushed(model.id) if unflushed and live else 0)


async def delete(session: Session, cache: PolicyCache, name: str) -> None:
    def write() -> None:
        model = model_or_404(session, name)
        try:
            learners.stop_learner(session, model)
        except learners.LearnerNotFoundError:
            raise _no_learner(model) from None
        session.commit()

    await committed_then_refreshed(cache, write)


def _no_learner(model: Model) -> ApiError:
    message = f"model {model.name!r} has no learner (PUT /models/{model.name}/learner starts one)"
    return ApiError(404, "not_found", f"name: {message}", details=[{"field": "name", "message": message}])


def learner_out(session: Session, model: Model, learner: Learner, *, unflushed: int = 0) -> LearnerOut:
    published = learners.publications(session, learner.id)
    live = _live_returns(session, [p.policy_id for p in published])
    explore = (model.experience or {}).get("explore")
    rates = _recent_rates(learner, published)
    pending = _pending(session, model.id, learner)
    return LearnerOut(
        model=model.name,
        id=learner.id,
        status=learner.status,
        error=learner.error,
        attempts=learner.attempts,
        worker_id=learner.worker_id,
        created_at=learner.created_at,
        started_at=learner.started_at,
        heartbeat_at=learner.heartbeat_at,
        lease_expires_at=learner.lease_expires_at,
        config=dict(learner.config),
        publish_every=learner.publish_every,
        publish=learner.publish,  # type: ignore[arg-type]  # the table's check constraint keeps it to the modes
        canary=None if learner.canary is None else CanaryOut(**learner.canary),
        explore=None if not explore else ExploreOut(**{k: explore[k] for k in ("noise", "sigma", "percent")}),
        transitions_consumed=learner.transitions_consumed,
        updates=learner.updates,
        update_to_data=learner.updates / learner.transitions_consumed if learner.transitions_consumed else None,
        lag_transitions=pending,
        # With what this process recorded and has not flushed: a client waiting on it between episodes would otherwise
        # not see its own latest episode (up to EXPERIENCE_FLUSH_SECONDS of steps) and start the next one early;
        # in learn_bench one client ran two or three episodes per wait, each burst with one policy, and the learner
        # needed about a third more updates to -200 (bench/learn_sim.py: flush_every=1 against 60 at client_speed=8).
        unlearned_transitions=pending + unflushed + _owed_transitions(learner),
        lag_seconds=_lag_seconds(session, model.id, learner.cursor),
        transitions_per_second=rates[0] if rates else None,
        updates_per_second=rates[1] if rates else None,
        progress_at=learner.progress_at,
        publishes=learner.publishes,
        last_publish_at=learner.last_publish_at,
        last_policy_id=learner.last_policy_id,
        policies=[
            PublishedPolicyOut(
                policy_id=p.policy_id,
                published_at=p.published_at,
                updates=p.updates,
                transitions_consumed=p.transitions_consumed,
                role=p.role,
                live_episodes=live.get(p.policy_id, (0, None))[0],
                live_mean_return=live.get(p.policy_id, (0, None))[1],
            )
            for p in published
        ],
    )


def _pending(session: Session, model_id: int, learner: Learner) -> int:
    """Recorded transitions after the learner's cursor, counted now: what the learner last saw is older (it counts
    at its reads, and a starting learner has not read yet) and would let clients waiting on the lag run ahead."""
    if learner.status not in ("queued", "running"):
        return learner.pending
    counted = session.scalar(
        select(func.coalesce(func.sum(ExperienceChunk.transitions), 0)).where(
            ExperienceChunk.model_id == model_id, ExperienceChunk.id > learner.cursor
        )
    )
    return int(counted or 0)


def _owed_transitions(learner: Learner) -> int:
    """Consumed transitions whose gradient updates are still due (the learner's own count, TrainingConfig.updates_after,
    none before learning_starts): the updates owed, in transitions (`update_every` per update)."""
    try:
        config = load_job_config(learner.config)
    except ValueError:  # a config the learner process fails with the reason
        return 0
    owed = max(0, config.updates_after(learner.transitions_consumed) - learner.updates)
    return owed * config.update_every


def _recent_rates(learner: Learner, published: list[LearnerPublication]) -> tuple[float, float] | None:
    """(transitions/s, updates/s) of a running learner: its counters now against those written with its newest
    publish at least RATE_MIN_SECONDS before its last progress (the publishes are the counters' history). None when
    it is not running or has no such publish yet."""
    if learner.status != "running" or learner.progress_at is None:
        return None
    for publication in published:  # newest first
        seconds = (learner.progress_at - publication.published_at).total_seconds()
        if seconds >= RATE_MIN_SECONDS:
            return (
                max(learner.transitions_consumed - publication.transitions_consumed, 0) / seconds,
                max(learner.updates - publication.updates, 0) / seconds,
            )
    return None


def _live_returns(session: Session, policy_ids: list[int]) -> dict[int, tuple[int, float | None]]:
    """(episodes, mean return) of each policy over every rollout it served under."""
    if not policy_ids:
        return {}
    rows = session.execute(
        select(LiveReturn.policy_id, func.sum(LiveReturn.episodes), func.sum(LiveReturn.return_sum))
        .where(LiveReturn.policy_id.in_(policy_ids))
        .group_by(LiveReturn.policy_id)
    )
    return {
        policy_id: (int(episodes or 0), float(total) / int(episodes) if episodes else None)
        for policy_id, episodes, total in rows
    }


def _lag_seconds(session: Session, model_id: int, cursor: int) -> float | None:
    """Seconds from the newest consumed transition to the newest recorded one; None before anything was recorded."""
    newest = session.scalar(select(func.max(ExperienceChunk.last_time)).where(ExperienceChunk.model_id == model_id))
    if newest is None:
        return None
    consumed = session.scalar(
        select(func.max(ExperienceChunk.last_time)).where(
            ExperienceChunk.model_id == model_id, ExperienceChunk.id <= cursor
        )
    )
    if consumed is None:
        first = session.scalar(select(func.min(ExperienceChunk.first_time)).where(ExperienceChunk.model_id == model_id))
        return max(0.0, float(newest) - float(first or newest))
    return max(0.0, float(newest) - float(consumed))
