"""A typed Python client for the DDPG policy service (httpx; sync `PolicyClient` and async `AsyncPolicyClient`).

Self-contained on purpose: it needs only httpx and numpy, never torch, pydantic or the service's own packages, so
it can be installed with any controller or notebook: `pip install ./ddpg_client` from a checkout is this package
alone (its own pyproject.toml; `[stream]` adds websockets for WS /act/stream, `[rollout]` gymnasium for the
`rollout` command).

    with PolicyClient("http://127.0.0.1:8000", api_key="...") as client:
        action = client.act([1.0, 0.0, 0.0]).action
        job = client.wait(client.train(episodes=20, seed=5).id, timeout=600)
        curve = client.rewards(job.id)

    async with AsyncPolicyClient("http://127.0.0.1:8000") as client:
        action = (await client.act([1.0, 0.0, 0.0])).action

Every non-2xx answer raises a `ServiceError` subclass carrying the service's error code and message
(`{"error": {"code", "message", "details"}}`); network failures raise httpx's own `httpx.TransportError`.

Layout: `protocol` builds each request and reads its answer without doing any I/O (one implementation of every
call), `clients` carries those calls out over httpx sync or async, `results` and `errors` are the types,
`control_loop` (episodes run locally on the service's actions), `drive` (an environment that lives here driven over
the stream, with rewards and episode ends, for an online learner) and `cli` the command line (`python -m ddpg_client
rollout --episodes 5`, `python -m ddpg_client drive --env ID --model NAME --episodes N`).
"""

from ddpg_client.clients import AsyncPolicyClient, PolicyClient
from ddpg_client.control_loop import EpisodeOutcome, run_remote_episodes
from ddpg_client.errors import (
    AuthError,
    NotFoundError,
    QueueFullError,
    ServiceError,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
    error_from_response,
)
from ddpg_client.protocol import DEFAULT_TIMEOUT_SECONDS, Observation, Observations
from ddpg_client.results import (
    FINISHED_STATUSES,
    ActResult,
    BatchActResult,
    Episode,
    Evaluation,
    Job,
    JobProgress,
    JobStatus,
    Policy,
    PromoteRule,
    Rewards,
)

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "FINISHED_STATUSES",
    "ActResult",
    "AsyncPolicyClient",
    "AuthError",
    "BatchActResult",
    "Episode",
    "EpisodeOutcome",
    "Evaluation",
    "Job",
    "JobProgress",
    "JobStatus",
    "NotFoundError",
    "Observation",
    "Observations",
    "Policy",
    "PolicyClient",
    "PromoteRule",
    "QueueFullError",
    "Rewards",
    "ServiceError",
    "UnavailableError",
    "ValidationError",
    "WaitTimeoutError",
    "error_from_response",
    "run_remote_episodes",
]
