"""A sweep's promotion rule, applied to its best trial's policy once the sweep has ended.

Trial policies are registered with `never` as they finish (store.sweeps.begin_trial makes their jobs so); only
the sweep knows which trial is best, so the rule runs here, on an already registered policy, with the same
meaning as register_policy's: `if_better` only when the model has no champion or the candidate's
eval_mean_return is strictly higher (a score beats no score).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.training_config import PROMOTE_RULES
from store.policies import PolicyNotFoundError, promote_policy
from store.registry import champion_of, lock_registry
from store.tables import Policy


def promote_by_rule(session: Session, policy_id: int, rule: str) -> bool:
    """Make the policy its model's champion if the rule says so; returns whether it did. The caller commits."""
    if rule not in PROMOTE_RULES:
        raise ValueError(f"promote must be one of {', '.join(PROMOTE_RULES)}, got {rule!r}")
    if rule == "never":
        return False
    # The registry lock first: a concurrent promotion must not slip between the comparison and the write.
    lock_registry(session)
    policy = session.get(Policy, policy_id)
    if policy is None or policy.model_id is None:
        raise PolicyNotFoundError(f"policy {policy_id} not found")
    if rule == "if_better" and not _beats_champion(session, policy):
        return False
    promote_policy(session, policy_id)
    return True


def _beats_champion(session: Session, candidate: Policy) -> bool:
    assert candidate.model_id is not None
    champion_id = champion_of(session, candidate.model_id)
    if champion_id is None or champion_id == candidate.id:
        return champion_id is None
    if candidate.eval_mean_return is None:
        return False
    current = session.scalar(select(Policy.eval_mean_return).where(Policy.id == champion_id))
    return current is None or candidate.eval_mean_return > current
