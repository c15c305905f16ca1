"""Models, rollouts and policies as the API shows them: the stored rows with their live figures and whether a policy
is the default, read in the request's session (before a write commits, so the answer is of that transaction)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.schemas.models import GuardIn, LiveReturnOut, ModelOut, RolloutOut, RolloutState, ShadowOut, SpacesOut
from app.schemas.policies import DEFAULT_POLICY_ID, PolicyList, PolicyOut
from models.registry_vocabulary import CHALLENGER, CHAMPION
from store import learners, live_returns, policies, registry, return_buckets, rollouts
from store.tables.registry import Model, Policy, Rollout


def rollout_out(session: Session, rollout: Rollout, champion_id: int | None) -> RolloutOut:
    """A rollout with its live returns (champion and challenger) and its shadow figures."""
    champion = champion_id if rollout.status == "active" else rollout.champion_id
    roles = {rollout.challenger_id: CHALLENGER}
    if champion is not None:
        roles[champion] = CHAMPION
    figures = live_returns.stats(session, rollout.id, roles)
    trimmed = return_buckets.trimmed_means(session, rollout.id, list(roles))
    live = []
    for policy_id, stats in figures.items():
        low = high = None
        if stats.mean is not None and stats.ci95 is not None:
            low, high = stats.mean - stats.ci95, stats.mean + stats.ci95
        live.append(
            LiveReturnOut(
                policy_id=policy_id,
                role=roles[policy_id],
                episodes=stats.episodes,
                mean_return=stats.mean,
                std_return=stats.std,
                ci95_low=low,
                ci95_high=high,
                trimmed_mean_return=trimmed[policy_id],
            )
        )
    samples = rollout.shadow_samples
    shadow = ShadowOut(
        samples=samples,
        mean_divergence=rollout.shadow_divergence_sum / samples if samples else None,
        mean_latency_seconds=rollout.shadow_latency_sum / samples if samples else None,
    )
    guard = None
    if rollout.min_episodes is not None and rollout.max_regression is not None:
        guard = GuardIn(
            min_episodes=rollout.min_episodes,
            max_regression=rollout.max_regression,
            min_improvement=rollout.min_improvement,
        )
    return RolloutOut(
        id=rollout.id,
        status=rollout.status,  # type: ignore[arg-type]  # the table's check constraint keeps it to RolloutStatus
        mode=rollout.mode,  # type: ignore[arg-type]
        percent=rollout.percent,
        champion_id=champion,
        challenger_id=rollout.challenger_id,
        guard=guard,
        started_at=rollout.started_at,
        updated_at=rollout.updated_at,
        ended_at=rollout.ended_at,
        end_reason=rollout.end_reason,
        live=live,
        shadow=shadow,
        guard_statistic=live_returns.guard_statistic(session, rollout.model_id),
    )


def rollout_state(session: Session, model: Model) -> RolloutState:
    champion_id = registry.champion_of(session, model.id)
    history = [rollout_out(session, row, champion_id) for row in rollouts.rollout_history(session, model.id)]
    active = next((row for row in history if row.status == "active"), None)
    return RolloutState(model=model.name, active=active, history=history)


def model_out(session: Session, model: Model, default_model: str) -> ModelOut:
    aliases = registry.get_aliases(session, model.id)
    active = rollouts.get_active_rollout(session, model.id)
    learner = learners.latest_learner(session, model.id)
    champion_id = aliases.get(CHAMPION)
    if active is not None:
        aliases[CHALLENGER] = active.challenger_id
    return ModelOut(
        id=model.id,
        name=model.name,
        env_id=model.env_id,
        spaces=SpacesOut.model_validate(model.spaces),
        created_at=model.created_at,
        is_default=model.name == default_model,
        policies=registry.count_policies(session, model.id),
        champion_id=champion_id,
        aliases=dict(sorted(aliases.items())),
        rollout=None if active is None else rollout_out(session, active, champion_id),
        learner=None if learner is None else learner.status,
    )


def policy_out(session: Session, policy: Policy, default_model: str) -> PolicyOut:
    """A policy, with whether it is the default (the default model's champion)."""
    default_id = policies.get_serving_state(session, default_model)[0]
    return PolicyOut.model_validate(policy, context={DEFAULT_POLICY_ID: default_id})


def policy_page(
    session: Session, default_model: str, *, limit: int, offset: int, model: Model | None = None
) -> PolicyList:
    """A page of policies (of one model, when given), newest first, with the total count."""
    page, total = policies.list_policies(
        session, limit=limit, offset=offset, model_id=None if model is None else model.id
    )
    context = {DEFAULT_POLICY_ID: policies.get_serving_state(session, default_model)[0]}
    items = [PolicyOut.model_validate(row, context=context) for row in page]
    return PolicyList(items=items, total=total, limit=limit, offset=offset)
