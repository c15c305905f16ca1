"""The policies of the registry: validated actor bytes with their metadata, each a version of one model, and the
champion of a model (what /act serves for it; the default model's champion is the service's default policy)."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.registry_vocabulary import DEFAULT_MODEL_NAME
from models.reward_ranges import as_stored, default_reward_range
from models.training_config import PROMOTE_RULES
from models.weights import ActorWeights, decode_actor
from store.registry import champion_of, get_model, lock_registry, model_for_env, registry_version, set_champion
from store.tables.base import utcnow
from store.tables.registry import Model, Policy


class PolicyNotFoundError(LookupError):
    """No policy with that id."""


class PolicyModelMismatchError(ValueError):
    """The actor does not fit the model it was meant for (another environment, or other sizes)."""


def register_policy(
    session: Session,
    *,
    weights: bytes,
    source_job_id: int | None = None,
    promote: str = "if_better",
    model_id: int | None = None,
    default_model: str = DEFAULT_MODEL_NAME,
) -> Policy:
    """Store an actor after strict validation as a version of a model, then apply the promotion rule. The caller
    commits.

    `model_id` names the model; without it the policy joins `default_model` when that is for the actor's
    environment, else the model of its environment (created if there is none). Raises
    models.weights.WeightsFormatError (a ValueError) for bytes that are not a valid policy file,
    PolicyModelMismatchError for an actor of another environment or other sizes than its model, and ValueError for
    an unknown promotion rule. `if_better` makes the policy its model's champion only when the model has none yet or
    its eval_mean_return is strictly higher than the champion's (a score beats no score).
    """
    if promote not in PROMOTE_RULES:
        raise ValueError(f"promote must be one of {', '.join(PROMOTE_RULES)}, got {promote!r}")
    actor = decode_actor(weights)
    # The registry lock first: concurrent `if_better` registrations must not both compare against the same champion.
    lock_registry(session)
    model = _model_for(session, actor, model_id, default_model)
    policy = Policy(
        created_at=utcnow(),
        sha256=hashlib.sha256(weights).hexdigest(),
        weights=weights,
        meta=actor.metadata(),
        env_id=actor.env_id,
        obs_dim=actor.obs_dim,
        act_dim=actor.act_dim,
        eval_mean_return=actor.eval_mean_return,
        source_job_id=source_job_id,
        model_id=model.id,
    )
    session.add(policy)
    session.flush()  # assigns policy.id
    if rule_promotes(session, policy, promote):
        set_champion(session, model.id, policy.id)
    return policy


def _model_for(session: Session, actor: ActorWeights, model_id: int | None, default_model: str) -> Model:
    if model_id is None:
        spaces = {
            "obs_dim": actor.obs_dim,
            "act_dim": actor.act_dim,
            # An actor knows its action bounds but not the observation's.
            "observation_low": [None] * actor.obs_dim,
            "observation_high": [None] * actor.obs_dim,
            "action_low": [float(v) for v in actor.action_low],
            "action_high": [float(v) for v in actor.action_high],
            "reward_range": as_stored(default_reward_range(actor.env_id)),
        }
        return model_for_env(session, actor.env_id, spaces, preferred=default_model)
    model = session.get(Model, model_id)
    if model is None:
        raise PolicyModelMismatchError(f"model {model_id} does not exist")
    sizes = (model.spaces.get("obs_dim"), model.spaces.get("act_dim"))
    # A model without an environment here (it lives with the clients) takes any actor of its sizes.
    env_differs = model.env_id is not None and actor.env_id != model.env_id
    if env_differs or sizes != (actor.obs_dim, actor.act_dim):
        raise PolicyModelMismatchError(
            f"the actor is for {actor.env_id} (obs_dim {actor.obs_dim}, act_dim {actor.act_dim}) but model "
            f"{model.name!r} is for {model.env_id} (obs_dim {sizes[0]}, act_dim {sizes[1]})"
        )
    return model


def get_policy(session: Session, policy_id: int) -> Policy | None:
    """The policy, or None. Its `weights` load lazily on first access."""
    return session.get(Policy, policy_id)


def list_policies(
    session: Session, *, limit: int = 50, offset: int = 0, model_id: int | None = None
) -> tuple[list[Policy], int]:
    """A page of policies (of one model, when given), newest first, and the total count."""
    count = select(func.count()).select_from(Policy)
    query = select(Policy)
    if model_id is not None:
        count = count.where(Policy.model_id == model_id)
        query = query.where(Policy.model_id == model_id)
    total = session.scalar(count) or 0
    page = session.scalars(query.order_by(Policy.id.desc()).limit(limit).offset(offset)).all()
    return list(page), total


def get_serving_state(session: Session, model: str = DEFAULT_MODEL_NAME) -> tuple[int | None, int]:
    """(the model's champion id, the registry version): two indexed reads, cheap enough to poll twice a second."""
    # The version first: on PostgreSQL (read committed) each statement sees the latest commit, so a promotion
    # landing between two reads must leave us with an older version than the state, never a newer one; otherwise
    # a poller would record the new version beside the old champion and never look again.
    version = registry_version(session)
    found = get_model(session, model)
    champion = None if found is None else champion_of(session, found.id)
    return champion, version


def get_default_policy(session: Session, model: str = DEFAULT_MODEL_NAME) -> Policy | None:
    """The model's champion, or None when nothing has been promoted in it yet."""
    champion_id, _version = get_serving_state(session, model)
    return None if champion_id is None else session.get(Policy, champion_id)


def champion_model_name(session: Session, policy_id: int) -> str | None:
    """The name of the model whose champion (what /act serves for it) the policy is, or None."""
    policy = session.get(Policy, policy_id)
    if policy is None or policy.model_id is None or champion_of(session, policy.model_id) != policy_id:
        return None
    model = session.get(Model, policy.model_id)
    return None if model is None else model.name


def promote_policy(session: Session, policy_id: int) -> Policy:
    """Make the policy its model's champion (bumping the registry version even if it already was). The caller
    commits. Sessions already running keep their policy; an active rollout of this policy ends `promoted`."""
    policy = session.get(Policy, policy_id)
    if policy is None or policy.model_id is None:
        raise PolicyNotFoundError(f"policy {policy_id} not found")
    set_champion(session, policy.model_id, policy.id)
    return policy


def rule_promotes(session: Session, candidate: Policy, rule: str) -> bool:
    """The promotion rule, for a registered policy of a model (hold lock_registry: a concurrent promotion must not
    slip between the comparison and the write). `always`; `never`; `if_better`: only when the model has no champion
    or the candidate's eval_mean_return is strictly higher than the champion's (a score beats no score)."""
    if rule not in PROMOTE_RULES:
        raise ValueError(f"promote must be one of {', '.join(PROMOTE_RULES)}, got {rule!r}")
    if rule != "if_better":
        return rule == "always"
    assert candidate.model_id is not None
    champion_id = champion_of(session, candidate.model_id)
    if champion_id is None or champion_id == candidate.id:
        return champion_id is None
    if candidate.eval_mean_return is None:
        return False
    current = session.scalar(select(Policy.eval_mean_return).where(Policy.id == champion_id))
    return current is None or candidate.eval_mean_return > current
