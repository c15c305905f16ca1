"""The service's answers as typed, frozen dataclasses, defined here once for both clients.

They mirror the service's response schemas field by field on purpose, without importing them: the client must
work where the service's code (and pydantic) is not installed. Parsing is lenient about fields the service
may add or leave out, so a newer service does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
PromoteRule = Literal["if_better", "always", "never"]
FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class ActResult:
    """The action for one observation and the policy that computed it."""

    action: list[float]
    policy_id: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActResult:
        return cls(action=[float(v) for v in data["action"]], policy_id=int(data["policy_id"]))


@dataclass(frozen=True)
class BatchActResult:
    """One action per observation, in order, and the policy that computed them."""

    actions: list[list[float]]
    policy_id: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchActResult:
        return cls(actions=[[float(v) for v in row] for row in data["actions"]], policy_id=int(data["policy_id"]))

    def as_array(self) -> npt.NDArray[np.float32]:
        """The actions as a (batch, act_dim) float32 array."""
        return np.asarray(self.actions, dtype=np.float32)


@dataclass(frozen=True)
class JobProgress:
    episodes_done: int
    episodes_total: int | None
    env_steps: int
    last_return: float | None
    best_eval_return: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobProgress:
        return cls(
            episodes_done=int(data.get("episodes_done") or 0),
            episodes_total=_int_or_none(data.get("episodes_total")),
            env_steps=int(data.get("env_steps") or 0),
            last_return=_float_or_none(data.get("last_return")),
            best_eval_return=_float_or_none(data.get("best_eval_return")),
        )


@dataclass(frozen=True)
class Job:
    """A training job and its progress (GET /jobs/{id})."""

    id: int
    status: str
    promote: str
    config: dict[str, Any]
    progress: JobProgress
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    policy_id: int | None = None
    error: str | None = None
    # The full JSON as received, so fields added to the service later are not lost to older clients.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            id=int(data["id"]),
            status=str(data["status"]),
            promote=str(data.get("promote", "")),
            config=dict(data.get("config") or {}),
            progress=JobProgress.from_json(data.get("progress") or {}),
            created_at=_datetime(data.get("created_at")),
            started_at=_datetime(data.get("started_at")),
            finished_at=_datetime(data.get("finished_at")),
            attempts=int(data.get("attempts") or 0),
            cancel_requested=bool(data.get("cancel_requested", False)),
            policy_id=_int_or_none(data.get("policy_id")),
            error=data.get("error"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Episode:
    episode: int
    episode_return: float
    avg_return_10: float
    env_steps: int
    wall_time: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Episode:
        return cls(
            episode=int(data["episode"]),
            episode_return=float(data["episode_return"]),
            avg_return_10=float(data["avg_return_10"]),
            env_steps=int(data["env_steps"]),
            wall_time=float(data["wall_time"]),
        )


@dataclass(frozen=True)
class Evaluation:
    episode: int
    env_steps: int
    mean_return: float
    std_return: float
    wall_time: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            episode=int(data["episode"]),
            env_steps=int(data["env_steps"]),
            mean_return=float(data["mean_return"]),
            std_return=float(data["std_return"]),
            wall_time=float(data["wall_time"]),
        )


@dataclass(frozen=True)
class Rewards:
    """A job's reward history so far (GET /jobs/{id}/rewards)."""

    job_id: int
    status: str
    episodes: list[Episode]
    evaluations: list[Evaluation]

    @property
    def returns(self) -> list[float]:
        return [e.episode_return for e in self.episodes]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rewards:
        return cls(
            job_id=int(data["job_id"]),
            status=str(data.get("status", "")),
            episodes=[Episode.from_json(e) for e in data.get("episodes") or []],
            evaluations=[Evaluation.from_json(e) for e in data.get("evaluations") or []],
        )


@dataclass(frozen=True)
class Policy:
    """A stored policy's metadata (GET /policies/{id})."""

    id: int
    env_id: str
    obs_dim: int
    act_dim: int
    sha256: str = ""
    created_at: datetime | None = None
    eval_mean_return: float | None = None
    source_job_id: int | None = None
    is_default: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # Where the policy comes from: "trained" (this service's trainer), or an importer's tag such as "sb3:TD3 2.x".
    origin: str = "trained"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        return cls(
            id=int(data["id"]),
            env_id=str(data.get("env_id", "")),
            obs_dim=int(data.get("obs_dim") or 0),
            act_dim=int(data.get("act_dim") or 0),
            sha256=str(data.get("sha256", "")),
            created_at=_datetime(data.get("created_at")),
            eval_mean_return=_float_or_none(data.get("eval_mean_return")),
            source_job_id=_int_or_none(data.get("source_job_id")),
            is_default=bool(data.get("is_default", False)),
            meta=dict(data.get("meta") or {}),
            raw=dict(data),
            origin=str(data.get("origin") or "trained"),
        )
