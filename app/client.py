"""A typed Python client for the DDPG policy service (httpx; sync `PolicyClient` and async `AsyncPolicyClient`).

Self-contained on purpose: it needs only httpx and numpy (and gymnasium for the `rollout` command), never torch,
pydantic or the service's own modules, so it can be copied into or installed with any controller or notebook.

    with PolicyClient("http://127.0.0.1:8000", api_key="...") as client:
        action = client.act([1.0, 0.0, 0.0]).action
        job = client.wait(client.train(episodes=20, seed=5).id, timeout=600)
        curve = client.rewards(job.id)

Every non-2xx answer raises a `ServiceError` subclass carrying the service's error code and message
(`{"error": {"code", "message", "details"}}`); network failures raise httpx's own `httpx.TransportError`.

Command line (runs Pendulum locally, every action from the service's POST /act):

    python -m app.client rollout --url http://127.0.0.1:8000 --episodes 5 [--seed 0] [--api-key KEY]
    python -m app.client act --url http://127.0.0.1:8000 1.0 0.0 0.0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import numpy as np
import numpy.typing as npt

__all__ = [
    "ActResult",
    "AsyncPolicyClient",
    "AuthError",
    "BatchActResult",
    "Episode",
    "Evaluation",
    "Job",
    "JobProgress",
    "NotFoundError",
    "Policy",
    "PolicyClient",
    "QueueFullError",
    "Rewards",
    "ServiceError",
    "UnavailableError",
    "ValidationError",
    "WaitTimeoutError",
    "main",
]

# Named explicitly: under `python -m app.client` __name__ is "__main__".
logger = logging.getLogger("app.client")

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
PromoteRule = Literal["if_better", "always", "never"]
FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_TIMEOUT_SECONDS = 10.0
Observation = Sequence[float] | npt.NDArray[np.floating[Any]]
Observations = Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]]


# ---- errors -----------------------------------------------------------------------------------------------


class ServiceError(Exception):
    """The service answered with an error status; `code` and `message` come from its JSON error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = [dict(d) for d in details]
        self.retry_after = retry_after


class AuthError(ServiceError):
    """401/403: the endpoint needs `Authorization: Bearer <API_KEY>` and the key is missing or wrong."""


class NotFoundError(ServiceError):
    """404: no such job or policy (or route)."""


class ValidationError(ServiceError):
    """400/422: the request was rejected; `details` name the fields at fault."""


class QueueFullError(ServiceError):
    """429: too many training jobs are queued; retry later."""


class UnavailableError(ServiceError):
    """503: e.g. no policy trained yet; `retry_after` holds the server's Retry-After in seconds, if given."""


class WaitTimeoutError(TimeoutError):
    """`wait()` gave up before the job finished; `job` is its last known state."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s")
        self.job = job
        self.timeout = timeout


_ERRORS_BY_STATUS: dict[int, type[ServiceError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    422: ValidationError,
    429: QueueFullError,
    503: UnavailableError,
}


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from this service, not worth a date parser here
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def error_from_response(response: httpx.Response) -> ServiceError:
    """The typed error for a non-2xx response, from the one JSON error shape or, failing that, the raw text."""
    status = response.status_code
    code = f"http_{status}"
    message = response.reason_phrase or "error"
    details: list[Mapping[str, Any]] = []
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        raw_details = error.get("details")
        if isinstance(raw_details, list):
            details = [d for d in raw_details if isinstance(d, dict)]
    elif isinstance(body, dict) and "detail" in body:
        # A proxy or a stock FastAPI app in front of (or instead of) the service.
        message = body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
    elif response.text.strip():
        message = response.text.strip()[:500]
    cls = _ERRORS_BY_STATUS.get(status, ServiceError)
    return cls(
        status, code, message, details=details, retry_after=_parse_retry_after(response.headers.get("retry-after"))
    )


def _checked_json(response: httpx.Response) -> Any:
    if response.is_error:
        raise error_from_response(response)
    return response.json()


# ---- results ----------------------------------------------------------------------------------------------


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
        )


# ---- request building, shared by both clients ---------------------------------------------------------------


def _observation_json(observation: Observation) -> list[float]:
    array = np.asarray(observation, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"one observation must be a flat sequence of numbers, got shape {array.shape}")
    return [float(v) for v in array]


def _observations_json(observations: Observations) -> list[list[float]]:
    array = np.asarray(observations, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"observations must be a 2-D (batch, obs_dim) array, got shape {array.shape}")
    rows: list[list[float]] = array.tolist()
    return rows


def _act_body(key: str, value: object, policy_id: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {key: value}
    if policy_id is not None:
        body["policy_id"] = policy_id
    return body


def _train_body(preset: str | None, promote: str | None, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    # Unset (None) fields are left out so the server's preset fills them, exactly as with the trainer CLI.
    body = {key: value for key, value in hyperparameters.items() if value is not None}
    if preset is not None:
        body["preset"] = preset
    if promote is not None:
        body["promote"] = promote
    return body


def _page_params(status: str | None, limit: int, offset: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status
    return params


def _items(data: Any) -> list[Any]:
    # Paginated endpoints answer {"items": [...], "total": ...}; accept a bare list too.
    if isinstance(data, dict):
        return list(data.get("items") or [])
    return list(data or [])


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "ddpg-policy-client/1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


# ---- the clients ------------------------------------------------------------------------------------------


class PolicyClient:
    """Synchronous client. Reuses one keep-alive connection pool; use as a context manager or call close()."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(api_key, headers), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return _checked_json(self._http.request(method, path, **kwargs))

    def act(self, observation: Observation, *, policy_id: int | None = None) -> ActResult:
        """The action for one observation (the default policy unless `policy_id` is given)."""
        body = _act_body("observation", _observation_json(observation), policy_id)
        return ActResult.from_json(self._request("POST", "/act", json=body))

    def act_batch(self, observations: Observations, *, policy_id: int | None = None) -> BatchActResult:
        """One action per observation, in one request."""
        body = _act_body("observations", _observations_json(observations), policy_id)
        return BatchActResult.from_json(self._request("POST", "/act", json=body))

    def train(self, *, preset: str | None = None, promote: PromoteRule | None = None, **hyperparameters: Any) -> Job:
        """Queue a training job (POST /train) with the trainer's hyperparameter names, e.g. episodes=20, seed=5."""
        return Job.from_json(self._request("POST", "/train", json=_train_body(preset, promote, hyperparameters)))

    def job(self, job_id: int) -> Job:
        return Job.from_json(self._request("GET", f"/jobs/{int(job_id)}"))

    def jobs(self, *, status: JobStatus | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        """Jobs, newest first."""
        data = self._request("GET", "/jobs", params=_page_params(status, limit, offset))
        return [Job.from_json(item) for item in _items(data)]

    def cancel(self, job_id: int) -> Job:
        return Job.from_json(self._request("POST", f"/jobs/{int(job_id)}/cancel"))

    def wait(self, job_id: int, timeout: float = 600.0, poll_interval: float = 1.0) -> Job:
        """Poll until the job has succeeded, failed or been cancelled; WaitTimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.finished:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(job, timeout)
            time.sleep(min(poll_interval, remaining))

    def rewards(self, job_id: int) -> Rewards:
        return Rewards.from_json(self._request("GET", f"/jobs/{int(job_id)}/rewards"))

    def policies(self, *, limit: int = 50, offset: int = 0) -> list[Policy]:
        data = self._request("GET", "/policies", params={"limit": limit, "offset": offset})
        return [Policy.from_json(item) for item in _items(data)]

    def policy(self, policy_id: int) -> Policy:
        return Policy.from_json(self._request("GET", f"/policies/{int(policy_id)}"))

    def promote(self, policy_id: int) -> Policy:
        """Make this policy the default one for /act (needs the API key when the service has one)."""
        return Policy.from_json(self._request("POST", f"/policies/{int(policy_id)}/promote"))

    def ready(self) -> bool:
        """Whether GET /readyz says the service can serve /act (False on 503, not an exception)."""
        try:
            self._request("GET", "/readyz")
        except UnavailableError:
            return False
        return True


class AsyncPolicyClient:
    """The same API as `PolicyClient`, for asyncio code (`async with AsyncPolicyClient(...) as client:`)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(api_key, headers), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return _checked_json(await self._http.request(method, path, **kwargs))

    async def act(self, observation: Observation, *, policy_id: int | None = None) -> ActResult:
        body = _act_body("observation", _observation_json(observation), policy_id)
        return ActResult.from_json(await self._request("POST", "/act", json=body))

    async def act_batch(self, observations: Observations, *, policy_id: int | None = None) -> BatchActResult:
        body = _act_body("observations", _observations_json(observations), policy_id)
        return BatchActResult.from_json(await self._request("POST", "/act", json=body))

    async def train(
        self, *, preset: str | None = None, promote: PromoteRule | None = None, **hyperparameters: Any
    ) -> Job:
        body = _train_body(preset, promote, hyperparameters)
        return Job.from_json(await self._request("POST", "/train", json=body))

    async def job(self, job_id: int) -> Job:
        return Job.from_json(await self._request("GET", f"/jobs/{int(job_id)}"))

    async def jobs(self, *, status: JobStatus | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        data = await self._request("GET", "/jobs", params=_page_params(status, limit, offset))
        return [Job.from_json(item) for item in _items(data)]

    async def cancel(self, job_id: int) -> Job:
        return Job.from_json(await self._request("POST", f"/jobs/{int(job_id)}/cancel"))

    async def wait(self, job_id: int, timeout: float = 600.0, poll_interval: float = 1.0) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job.finished:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(job, timeout)
            await asyncio.sleep(min(poll_interval, remaining))

    async def rewards(self, job_id: int) -> Rewards:
        return Rewards.from_json(await self._request("GET", f"/jobs/{int(job_id)}/rewards"))

    async def policies(self, *, limit: int = 50, offset: int = 0) -> list[Policy]:
        data = await self._request("GET", "/policies", params={"limit": limit, "offset": offset})
        return [Policy.from_json(item) for item in _items(data)]

    async def policy(self, policy_id: int) -> Policy:
        return Policy.from_json(await self._request("GET", f"/policies/{int(policy_id)}"))

    async def promote(self, policy_id: int) -> Policy:
        return Policy.from_json(await self._request("POST", f"/policies/{int(policy_id)}/promote"))

    async def ready(self) -> bool:
        try:
            await self._request("GET", "/readyz")
        except UnavailableError:
            return False
        return True


# ---- command line -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeOutcome:
    episode: int
    seed: int
    episode_return: float
    steps: int
    policy_ids: frozenset[int]


def run_remote_episodes(
    client: PolicyClient,
    *,
    episodes: int,
    seed: int = 0,
    env_id: str = "Pendulum-v1",
    max_steps: int | None = None,
    policy_id: int | None = None,
) -> Iterable[EpisodeOutcome]:
    """Run episodes locally, every action from POST /act; yields each episode's outcome as it ends.

    Episode i is reset with seed `seed + i`, so a run is reproducible for a given policy. Without `policy_id`
    each action comes from whatever is the default at that moment, so a promotion mid-run shows up in
    `policy_ids`.
    """
    import gymnasium as gym

    kwargs: dict[str, Any] = {} if max_steps is None else {"max_episode_steps": max_steps}
    env = gym.make(env_id, **kwargs)
    try:
        for index in range(episodes):
            obs, _ = env.reset(seed=seed + index)
            total, steps, done = 0.0, 0, False
            used: set[int] = set()
            while not done:
                result = client.act(obs, policy_id=policy_id)
                used.add(result.policy_id)
                obs, reward, terminated, truncated, _ = env.step(np.asarray(result.action, dtype=np.float32))
                total += float(reward)
                steps += 1
                done = bool(terminated or truncated)
            yield EpisodeOutcome(index, seed + index, total, steps, frozenset(used))
    finally:
        env.close()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.client", description="Talk to the DDPG policy service.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("POLICY_SERVICE_URL", "http://127.0.0.1:8000"))
    common.add_argument(
        "--api-key", default=os.environ.get("POLICY_SERVICE_API_KEY"), help="sent as `Authorization: Bearer`"
    )
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds per request")
    common.add_argument("--policy-id", type=int, default=None, help="a stored policy instead of the default one")
    sub = parser.add_subparsers(dest="command", required=True)

    rollout = sub.add_parser(
        "rollout", parents=[common], help="run episodes locally with every action from POST /act and print returns"
    )
    rollout.add_argument("--episodes", type=int, default=5)
    rollout.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    rollout.add_argument("--env-id", default="Pendulum-v1")
    rollout.add_argument("--max-steps", type=int, default=None, help="default: the environment's time limit")

    act = sub.add_parser("act", parents=[common], help="print the action for one observation")
    act.add_argument("observation", nargs="+", type=float)
    return parser


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cmd_rollout(args: argparse.Namespace, client: PolicyClient) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    returns: list[float] = []
    outcomes = run_remote_episodes(
        client,
        episodes=args.episodes,
        seed=args.seed,
        env_id=args.env_id,
        max_steps=args.max_steps,
        policy_id=args.policy_id,
    )
    for outcome in outcomes:
        returns.append(outcome.episode_return)
        policies = ",".join(str(p) for p in sorted(outcome.policy_ids))
        _write(
            f"episode {outcome.episode} seed {outcome.seed} return {outcome.episode_return:.2f} "
            f"steps {outcome.steps} policy {policies}"
        )
    _write(f"mean return {sum(returns) / len(returns):.2f} over {len(returns)} episodes")
    return 0


def _cmd_act(args: argparse.Namespace, client: PolicyClient) -> int:
    result = client.act(args.observation, policy_id=args.policy_id)
    _write(json.dumps({"action": result.action, "policy_id": result.policy_id}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m app.client`; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _build_parser().parse_args(argv)
    try:
        with PolicyClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command == "rollout":
                return _cmd_rollout(args, client)
            return _cmd_act(args, client)
    except ServiceError as exc:
        logger.error("service error: %s", exc)
        return 1
    except httpx.TransportError as exc:
        logger.error("cannot reach %s: %s", args.url, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
