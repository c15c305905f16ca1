"""Control loops over `WS /act/stream`: one connection is one session, a step is one small frame each way.

    with PolicyClient(url) as client, client.stream(model="pendulum") as stream:
        result = stream.act(observation)                   # the episode's first step
        result = stream.act(observation, reward=r)         # every later step: the previous step's reward
        stream.act(observation, reward=r, done=True)       # the episode ended; the next act() starts a new one
        stream.act(observation, reward=r, truncated=True)  # or was cut short (time limit): bootstrap past it

The policy never changes within an episode (not in a canary split, not across a promotion), and an answer
that is an error raises the same `ServiceError` subclass as over HTTP. Sync (`ActStream`, websockets' threading
client) and async (`AsyncActStream`) share the message building and reading below.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ddpg_client.errors import AuthError, NotFoundError, ServiceError, UnavailableError, ValidationError
from ddpg_client.protocol import DEFAULT_TIMEOUT_SECONDS, Observation, _observation_json
from ddpg_client.results import ActResult

# The stream's error bodies carry the service's code but no HTTP status: the status /act gives for each code.
_ERRORS_BY_CODE: dict[str, tuple[type[ServiceError], int]] = {
    "validation_error": (ValidationError, 422),
    "not_found": (NotFoundError, 404),
    "no_policy": (UnavailableError, 503),
    "policy_unavailable": (UnavailableError, 503),
    "unauthorized": (AuthError, 401),
}


# Headers of an HTTP client that must not reach a WebSocket handshake: httpx's `Connection: keep-alive` would replace
# the handshake's `Connection: Upgrade`, and the server would see a plain GET.
_NOT_FOR_HANDSHAKE = frozenset({"connection", "upgrade", "host", "accept-encoding", "content-length", "accept"})


def handshake_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers (its API key, its user agent) minus those that belong to the HTTP client."""
    return {name: value for name, value in (headers or {}).items() if name.lower() not in _NOT_FOR_HANDSHAKE}


def stream_url(base_url: str, model: str | None) -> str:
    """ws(s)://host/act/stream[?model=NAME] for the service at `base_url` (http or https)."""
    url = base_url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/act/stream"
    return url if model is None else f"{url}?model={quote(model)}"


def step_message(observation: Observation, reward: float | None, done: bool, truncated: bool = False) -> str:
    body: dict[str, Any] = {"observation": _observation_json(observation)}
    if reward is not None:
        body["reward"] = float(reward)
    if done:
        body["done"] = True
    if truncated:
        body["truncated"] = True
    return json.dumps(body)


def read_answer(message: str | bytes) -> ActResult:
    """The action, or the typed error of an error body."""
    data = json.loads(message)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        cls, status = _ERRORS_BY_CODE.get(str(error.get("code")), (ServiceError, 400))
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        raise cls(status, str(error.get("code")), str(error.get("message")), details=details)
    return ActResult.from_json(data)


class ActStream:
    """One session over `WS /act/stream` (blocking). Close it, or use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.timeout = timeout
        self._connection: ClientConnection = connect(
            stream_url(base_url, model),
            additional_headers=handshake_headers(headers),
            open_timeout=timeout,
            compression=None,
        )

    def act(
        self, observation: Observation, *, reward: float | None = None, done: bool = False, truncated: bool = False
    ) -> ActResult:
        """One step: send the observation (and the previous step's reward; at the episode's end `done` for a
        terminal state or `truncated` for one cut short), wait for the action."""
        # Refused at connect (an unknown model): the send fails, and the reason waits to be read below.
        with contextlib.suppress(ConnectionClosed):
            self._connection.send(step_message(observation, reward, done, truncated))
        return read_answer(self._connection.recv(timeout=self.timeout))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncActStream:
    """The same session for asyncio code: `async with AsyncActStream(url) as stream: await stream.act(obs)`."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.url = stream_url(base_url, model)
        self.headers = handshake_headers(headers)
        self.timeout = timeout
        self._connection: AsyncConnection | None = None

    async def connect(self) -> Self:
        self._connection = await async_connect(
            self.url, additional_headers=self.headers, open_timeout=self.timeout, compression=None
        )
        return self

    async def act(
        self, observation: Observation, *, reward: float | None = None, done: bool = False, truncated: bool = False
    ) -> ActResult:
        if self._connection is None:
            await self.connect()
        assert self._connection is not None
        with contextlib.suppress(ConnectionClosed):  # as in ActStream.act
            await self._connection.send(step_message(observation, reward, done, truncated))
        return read_answer(await self._connection.recv())

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
