"""A sweep's promotion rule, applied to its best trial's policy once the sweep has ended.

Trial policies are registered with `never` as they finish (store.sweeps.begin_trial makes their jobs so); only
the sweep knows which trial is best, so the rule runs here, on an already registered policy, by the one rule
register_policy applies too (store.policies.rule_promotes).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from models.training_config import PROMOTE_RULES
from store.policies import PolicyNotFoundError, promote_policy, rule_promotes
from store.registry import lock_registry
from store.tables.registry import Policy


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
    if not rule_promotes(session, policy, rule):
        return False
    promote_policy(session, policy_id)
    return True
