"""The policy registry: validation, promotion rules and the serving version."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy.orm import Session

from models.weights import WeightsFormatError
from store import policies
from tests.conftest import make_actor_bytes


def _register(session: Session, eval_return: float | None, promote: str = "if_better", seed: int = 0) -> int:
    policy = policies.register_policy(session, weights=make_actor_bytes(eval_return, seed=seed), promote=promote)
    session.commit()
    return policy.id


def test_register_stores_bytes_hash_and_metadata(session: Session) -> None:
    data = make_actor_bytes(-321.5)
    policy_id = policies.register_policy(session, weights=data, promote="never").id
    session.commit()
    stored = policies.get_policy(session, policy_id)
    assert stored is not None
    assert stored.weights == data
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert (stored.env_id, stored.obs_dim, stored.act_dim, stored.eval_mean_return) == ("Pendulum-v1", 3, 1, -321.5)
    assert stored.meta["format"] == "ddpg-actor/1" and stored.meta["action_high"] == [2.0]
    assert stored.created_at.tzinfo is not None


@pytest.mark.parametrize(
    "weights",
    [b"", b"garbage bytes", make_actor_bytes()[:-10], b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "],
    ids=["empty", "garbage", "truncated", "no-metadata"],
)
def test_register_rejects_invalid_bytes(session: Session, weights: bytes) -> None:
    with pytest.raises(WeightsFormatError):
        policies.register_policy(session, weights=weights)
    session.rollback()
    assert policies.list_policies(session) == ([], 0)


def test_register_rejects_an_unknown_rule(session: Session) -> None:
    with pytest.raises(ValueError, match="promote"):
        policies.register_policy(session, weights=make_actor_bytes(), promote="maybe")


def test_if_better_promotes_the_first_then_only_improvements(session: Session) -> None:
    assert policies.get_serving_state(session) == (None, 0)
    first = _register(session, -600.0)
    assert policies.get_serving_state(session) == (first, 1)
    _register(session, -700.0)  # worse: stays put
    _register(session, -600.0)  # equal: not better
    _register(session, None)  # unscored: never beats a default
    assert policies.get_serving_state(session) == (first, 1)
    better = _register(session, -200.0)
    assert policies.get_serving_state(session) == (better, 2)


def test_always_and_never(session: Session) -> None:
    good = _register(session, -150.0, promote="always")
    never = _register(session, -100.0, promote="never")
    assert policies.get_serving_state(session) == (good, 1)
    worse = _register(session, -900.0, promote="always")
    assert policies.get_serving_state(session) == (worse, 2)
    assert never not in (good, worse)


def test_promote_bumps_the_version_every_time(session: Session) -> None:
    a = _register(session, -300.0)
    b = _register(session, -500.0, promote="never")
    assert policies.get_serving_state(session) == (a, 1)
    policies.promote_policy(session, b)
    session.commit()
    assert policies.get_serving_state(session) == (b, 2)
    policies.promote_policy(session, b)
    session.commit()
    assert policies.get_serving_state(session) == (b, 3)
    default = policies.get_default_policy(session)
    assert default is not None and default.id == b


def test_promote_of_a_missing_policy(session: Session) -> None:
    with pytest.raises(policies.PolicyNotFoundError):
        policies.promote_policy(session, 424242)


def test_list_policies_newest_first(session: Session) -> None:
    ids = [_register(session, float(-100 * i), promote="never", seed=i) for i in range(1, 4)]
    page, total = policies.list_policies(session, limit=2)
    assert total == 3 and [p.id for p in page] == [ids[2], ids[1]]
