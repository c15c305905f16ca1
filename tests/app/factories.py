"""Test policies built from random numpy arrays (no torch), and small helpers shared by the app tests."""

from __future__ import annotations

import socket

from models.random_actor import random_actor_bytes


def make_policy_bytes(
    seed: int = 0,
    *,
    obs_dim: int = 3,
    act_dim: int = 1,
    hidden_size: int = 8,
    eval_mean_return: float | None = -500.0,
    action_bound: float = 2.0,
) -> bytes:
    """A valid `ddpg-actor/1` file with random weights; different seeds give different actions."""
    return random_actor_bytes(
        seed,
        obs_dim=obs_dim,
        act_dim=act_dim,
        hidden_size=hidden_size,
        action_bound=action_bound,
        eval_mean_return=eval_mean_return,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_error_shape(body: object, code: str | None = None) -> dict[str, object]:
    """Every error response is {"error": {"code", "message", "details"}}; returns the inner object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    if code is not None:
        assert error["code"] == code, error
    return error
