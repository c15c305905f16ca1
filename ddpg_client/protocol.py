"""What each client call sends and how its answer is read, with no I/O: the one implementation of the API.

Every call is an *operation*: a generator that yields the effects it needs (a `Request` to send, or a `Sleep`
between polls), is sent back each request's `httpx.Response`, and returns the parsed result. The sync and the
async client differ only in how they carry out those two effects (`ddpg_client.clients`), so a call's logic
(its request body, its parsing, its error handling, `wait`'s polling) is written here once for both.

    operation = act([1.0, 0.0, 0.0])
    request = next(operation)                    # Request("POST", "/act", json={"observation": [...]})
    operation.send(http.request(...))            # StopIteration(value=ActResult(...))
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from ddpg_client.errors import UnavailableError, WaitTimeoutError, checked_json
from ddpg_client.results import ActResult, BatchActResult, Job, JobStatus, Policy, PromoteRule, Rewards

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 10.0
USER_AGENT = "ddpg-policy-client/1"
Observation = Sequence[float] | npt.NDArray[np.floating[Any]]
Observations = Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Request:
    """One HTTP request, relative to the client's base URL."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait this long before going on (the transport sleeps its own way: time.sleep or asyncio.sleep)."""

    seconds: float


Effect: TypeAlias = Request | Sleep
# Yields effects, is sent the response to each Request (None after a Sleep), returns the call's result.
Operation: TypeAlias = Generator[Effect, httpx.Response | None, T]


def default_headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The headers every request carries: JSON, the client's name, and the bearer key when there is one."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


# ---- effects ------------------------------------------------------------------------------------------------


def _send(request: Request) -> Operation[httpx.Response]:
    response = yield request
    if response is None:
        raise RuntimeError(f"the transport answered {request.method} {request.path} with no response")
    return response


def _json(method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Operation[Any]:
    """Send one request; its JSON body, or the typed error for a non-2xx answer."""
    response = yield from _send(Request(method, path, json=json, params=params))
    return checked_json(response)


# ---- request bodies -----------------------------------------------------------------------------------------


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


# ---- the calls ----------------------------------------------------------------------------------------------


def act(
    observation: Observation,
    *,
    policy_id: int | None = None,
    model: str | None = None,
    session: str | None = None,
    reward: float | None = None,
    done: bool | None = None,
    truncated: bool | None = None,
) -> Operation[ActResult]:
    """The action for one observation: from `model`'s champion (the default model's when absent) unless `policy_id`
    is given. In a `session` (a client's episode id) the policy never changes until the episode ends; `reward` is
    the previous step's. The episode ends with `done` (terminated, gymnasium's sense: a terminal state) or
    `truncated` (cut short: a time limit, or the client stopped), the request carrying the final observation.
    Across API processes, pass the `policy_id` the session's first answer named (`WS /act/stream`, see `stream()`,
    needs none of this)."""
    body = _act_body("observation", _observation_json(observation), policy_id)
    extras = {"model": model, "session": session, "reward": reward, "done": done, "truncated": truncated}
    body.update({name: value for name, value in extras.items() if value is not None})
    return ActResult.from_json((yield from _json("POST", "/act", json=body)))


def act_batch(observations: Observations, *, policy_id: int | None = None) -> Operation[BatchActResult]:
    """One action per observation, in one request."""
    body = _act_body("observations", _observations_json(observations), policy_id)
    return BatchActResult.from_json((yield from _json("POST", "/act", json=body)))


def train(*, preset: str | None = None, promote: PromoteRule | None = None, **hyperparameters: Any) -> Operation[Job]:
    """Queue a training job (POST /train) with the trainer's hyperparameter names, e.g. episodes=20, seed=5."""
    body = _train_body(preset, promote, hyperparameters)
    return Job.from_json((yield from _json("POST", "/train", json=body)))


def job(job_id: int) -> Operation[Job]:
    """A job's status and progress."""
    return Job.from_json((yield from _json("GET", f"/jobs/{int(job_id)}")))


def jobs(*, status: JobStatus | None = None, limit: int = 50, offset: int = 0) -> Operation[list[Job]]:
    """Jobs, newest first."""
    data = yield from _json("GET", "/jobs", params=_page_params(status, limit, offset))
    return [Job.from_json(item) for item in _items(data)]


def cancel(job_id: int) -> Operation[Job]:
    """Cancel a job: a queued one at once, a running one within an episode (needs the API key if set)."""
    return Job.from_json((yield from _json("POST", f"/jobs/{int(job_id)}/cancel")))


def wait(job_id: int, timeout: float = 600.0, poll_interval: float = 1.0) -> Operation[Job]:
    """Poll until the job has succeeded, failed or been cancelled; WaitTimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        current = yield from job(job_id)
        if current.finished:
            return current
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeoutError(current, timeout)
        yield Sleep(min(poll_interval, remaining))


def rewards(job_id: int) -> Operation[Rewards]:
    """A job's reward history so far: per-episode returns and the evaluations."""
    return Rewards.from_json((yield from _json("GET", f"/jobs/{int(job_id)}/rewards")))


def policies(*, limit: int = 50, offset: int = 0) -> Operation[list[Policy]]:
    """Stored policies' metadata."""
    data = yield from _json("GET", "/policies", params={"limit": limit, "offset": offset})
    return [Policy.from_json(item) for item in _items(data)]


def policy(policy_id: int) -> Operation[Policy]:
    """One stored policy's metadata."""
    return Policy.from_json((yield from _json("GET", f"/policies/{int(policy_id)}")))


def promote(policy_id: int) -> Operation[Policy]:
    """Make this policy the default one for /act (needs the API key when the service has one)."""
    return Policy.from_json((yield from _json("POST", f"/policies/{int(policy_id)}/promote")))


def learner(model: str) -> Operation[dict[str, Any]]:
    """The model's online learner as GET /models/{name}/learner shows it (progress, lag, rates, publishes)."""
    data = yield from _json("GET", f"/models/{quote(model, safe='')}/learner")
    if not isinstance(data, dict):
        raise ValueError("GET /models/{name}/learner answered something other than an object")
    return data


def ready() -> Operation[bool]:
    """Whether GET /readyz says the service can serve /act (False on 503, not an exception)."""
    try:
        yield from _json("GET", "/readyz")
    except UnavailableError:
        return False
    return True
