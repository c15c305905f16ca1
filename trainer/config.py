"""The DDPG hyperparameters: one frozen dataclass whose fields document themselves, and the named presets.

Field names are the contract shared by the CLI (`--hidden-size`), the HTTP API (`"hidden_size"`) and
the `config` metadata of every exported actor, so renaming one is a breaking change.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

NoiseKind = Literal["ou", "gaussian"]
ExportChoice = Literal["best", "last"]


def _doc(help_text: str) -> dict[str, str]:
    """Field metadata carrying the help text that the CLI shows for the flag."""
    return {"help": help_text}


@dataclass(frozen=True)
class DDPGConfig:
    """Every knob of one DDPG run. The defaults are the tuned `default` preset (see PRESETS)."""

    env_id: str = field(default="Pendulum-v1", metadata=_doc("gymnasium environment id (continuous Box actions)"))
    seed: int = field(default=0, metadata=_doc("seed for torch, numpy, the environment and the noise"))
    episodes: int = field(default=30, metadata=_doc("training episodes to run"))
    max_episode_steps: int | None = field(
        default=None, metadata=_doc("steps per episode; None keeps the env's own time limit (200 for Pendulum)")
    )
    hidden_size: int = field(default=64, metadata=_doc("width of both hidden layers of actor and critic"))
    actor_lr: float = field(default=1e-3, metadata=_doc("Adam learning rate of the actor"))
    critic_lr: float = field(default=1e-3, metadata=_doc("Adam learning rate of the critic"))
    gamma: float = field(default=0.98, metadata=_doc("discount factor of the Bellman target"))
    tau: float = field(default=0.02, metadata=_doc("polyak factor of the soft target updates"))
    batch_size: int = field(default=256, metadata=_doc("transitions per gradient update"))
    replay_size: int = field(default=100_000, metadata=_doc("replay buffer capacity in transitions"))
    learning_starts: int = field(
        default=500, metadata=_doc("env steps before gradient updates start (at least one batch is always needed)")
    )
    noise: NoiseKind = field(default="gaussian", metadata=_doc("exploration noise: 'ou' or 'gaussian'"))
    noise_sigma: float = field(default=0.15, metadata=_doc("noise scale, in the actor's [-1, 1] action units"))
    ou_theta: float = field(default=0.15, metadata=_doc("Ornstein-Uhlenbeck mean-reversion rate (noise='ou' only)"))
    eval_every: int = field(default=2, metadata=_doc("episodes between evaluations (0: only at the end)"))
    eval_episodes: int = field(default=10, metadata=_doc("episodes per deterministic evaluation"))
    export: ExportChoice = field(default="best", metadata=_doc("export the best-evaluated actor or the last one"))
    random_steps: int = field(
        default=500, metadata=_doc("first env steps taken with uniformly random actions instead of the actor")
    )
    update_every: int = field(default=1, metadata=_doc("env steps between gradient updates"))

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self.env_id.strip() != "", "env_id", "must not be empty")
        _require(self.seed >= 0, "seed", "must be >= 0")
        _require(self.episodes >= 1, "episodes", "must be >= 1")
        _require(self.max_episode_steps is None or self.max_episode_steps >= 1, "max_episode_steps", "must be >= 1")
        _require(self.hidden_size >= 1, "hidden_size", "must be >= 1")
        _require(self.actor_lr > 0, "actor_lr", "must be > 0")
        _require(self.critic_lr > 0, "critic_lr", "must be > 0")
        _require(0 <= self.gamma <= 1, "gamma", "must be within [0, 1]")
        _require(0 < self.tau <= 1, "tau", "must be within (0, 1]")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.replay_size >= self.batch_size, "replay_size", "must be >= batch_size")
        _require(self.learning_starts >= 0, "learning_starts", "must be >= 0")
        _require(self.noise_sigma >= 0, "noise_sigma", "must be >= 0")
        _require(0 <= self.ou_theta <= 1, "ou_theta", "must be within [0, 1]")
        _require(self.eval_every >= 0, "eval_every", "must be >= 0")
        _require(self.eval_episodes >= 1, "eval_episodes", "must be >= 1")
        _require(self.random_steps >= 0, "random_steps", "must be >= 0")
        _require(self.update_every >= 1, "update_every", "must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, in field order (config.json, the weights metadata, the job row)."""
        return dataclasses.asdict(self)


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}: {message}")


def _check_types(config: DDPGConfig) -> None:
    """Reject wrong types with the field's name: configs arrive as JSON from the API, not only from code."""
    hints = typing.get_type_hints(DDPGConfig)
    for f in dataclasses.fields(DDPGConfig):
        value = getattr(config, f.name)
        expected = hints[f.name]
        if not _matches(value, expected):
            raise ValueError(f"invalid {f.name}: expected {_describe(expected)}, got {value!r}")


# The scalar types DDPGConfig uses, and what counts as one (bool is an int to Python, but not to us).
_SCALAR_CHECKS: dict[Any, Callable[[object], bool]] = {
    type(None): lambda v: v is None,
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, float) and math.isfinite(v),
    str: lambda v: isinstance(v, str),
}


def _matches(value: object, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin is Literal:
        return any(type(value) is type(choice) and value == choice for choice in get_args(expected))
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(expected))
    return _SCALAR_CHECKS[expected](value)


def _describe(expected: Any) -> str:
    if typing.get_origin(expected) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(expected))
    if typing.get_args(expected):
        return " or ".join(_describe(arg) for arg in get_args(expected))
    return "null" if expected is type(None) else str(getattr(expected, "__name__", expected))


def _coerce(name: str, value: object) -> object:
    """Accept an integer where a float is expected (JSON `1` for `1.0`); everything else must match exactly."""
    hint = typing.get_type_hints(DDPGConfig)[name]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# The tutorial, hyperparameter for hyperparameter: OU noise from the first step, an update every step
# once the buffer holds more than one batch (learning_starts = batch + 1), no random warm-up.
SEED_PRESET = DDPGConfig(
    episodes=100,
    max_episode_steps=200,
    hidden_size=256,
    actor_lr=1e-4,
    critic_lr=1e-3,
    gamma=0.99,
    tau=1e-2,
    batch_size=128,
    replay_size=50_000,
    learning_starts=129,
    noise="ou",
    noise_sigma=0.3,
    ou_theta=0.15,
    eval_every=10,
    eval_episodes=10,
    export="last",
    random_steps=0,
    update_every=1,
)

PRESETS: dict[str, DDPGConfig] = {
    "default": DDPGConfig(),
    "seed": SEED_PRESET,
}

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DDPGConfig))


def make_config(preset: str = "default", **overrides: object) -> DDPGConfig:
    """A preset with some fields replaced; ValueError naming the preset or field on anything invalid."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    unknown = sorted(set(overrides) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    coerced: dict[str, Any] = {name: _coerce(name, value) for name, value in overrides.items()}
    return dataclasses.replace(PRESETS[preset], **coerced)
