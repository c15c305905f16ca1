"""Control loops over `WS /act/stream`: one connection is one session, a step is one small frame each way.

    with PolicyClient(url) as client, client.stream(model="pendulum") as stream:
        result = stream.act(observation)                   # the episode's first step
        result = stream.act(observation, reward=r)         # every later step: the previous step's reward
        stream.act(observation, reward=r, done=True)       # the episode ended; the next act() starts a new one
        stream.act(observation, reward=r, truncated=True)  # or was cut short (time limit): bootstrap past it

The policy never changes within an episode (not in a canary split, not across a promotion), and an answer
that is an error raises the same `ServiceError` subclass as over HTTP. Sync (`ActStream`, websockets' threading
client) and async (`AsyncActStream`) share the message building and reading below.

`encoding="msgpack"` (`client.stream(encoding="msgpack")`) sends and reads binary msgpack frames instead of JSON
text: the same maps and the same answers, smaller and quicker to encode (needs the `msgpack` package).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlencode

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


# How a stream's messages are framed: JSON text frames, or msgpack binary frames holding the same maps.
StreamEncoding = Literal["json", "msgpack"]


def stream_url(base_url: str, model: str | None, encoding: StreamEncoding = "json") -> str:
    """ws(s)://host/act/stream[?model=NAME][&encoding=msgpack] for the service at `base_url` (http or https)."""
    url = base_url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/act/stream"
    query = {"model": model, "encoding": None if encoding == "json" else encoding}
    given = {name: value for name, value in query.items() if value is not None}
    return f"{url}?{urlencode(given, quote_via=quote)}" if given else url


def check_encoding(encoding: str) -> StreamEncoding:
    """The encoding, once its codec is importable (msgpack is optional: it fails here, not at the first step)."""
    if encoding == "json":
        return "json"
    if encoding == "msgpack":
        import msgpack  # noqa: F401

        return "msgpack"
    raise ValueError(f"encoding must be 'json' or 'msgpack', got {encoding!r}")


def step_message(
    observation: Observation,
    reward: float | None,
    done: bool,
    truncated: bool = False,
    encoding: StreamEncoding = "json",
) -> str | bytes:
    body: dict[str, Any] = {"observation": _observation_json(observation)}
    if reward is not None:
        body["reward"] = float(reward)
    if done:
        body["done"] = True
    if truncated:
        body["truncated"] = True
    if encoding == "msgpack":
        import msgpack

        packed: bytes = msgpack.packb(body)
        return packed
    return json.dumps(body)


def read_answer(message: str | bytes, encoding: StreamEncoding = "json") -> ActResult:
    """The action, or the typed error of an error body. A msgpack stream's answers are binary frames; a text frame
    is JSON in any stream (the refusal of a connection whose query was invalid)."""
    if encoding == "msgpack" and isinstance(message, bytes):
        import msgpack

        data = msgpack.unpackb(message)
    else:
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
        encoding: StreamEncoding = "json",
    ) -> None:
        self.timeout = timeout
        self.encoding = check_encoding(encoding)
        # Entered as a context manager, as websockets 17.1 and later want of a sync connection (a bare `connect()` warns
        # there); this stream's own `close` or `with` block ends it.
        self._lifetime = contextlib.ExitStack()
        self._connection: ClientConnection = self._lifetime.enter_context(
            connect(
                stream_url(base_url, model, encoding),
                additional_headers=handshake_headers(headers),
                open_timeout=timeout,
                compression=None,
            )
        )

    def act(
        self, observation: Observation, *, reward: float | None = None, done: bool = False, truncated: bool = False
    ) -> ActResult:
        """One step: send the observation (and the previous step's reward; at the episode's end `done` for a
        terminal state or `truncated` for one cut short), wait for the action."""
        # Refused at connect (an unknown model): the send fails, and the reason waits to be read below.
        with contextlib.suppress(ConnectionClosed):
            self._connection.send(step_message(observation, reward, done, truncated, self.encoding))
        return read_answer(self._connection.recv(timeout=self.timeout), self.encoding)

    def close(self) -> None:
        self._lifetime.close()

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
        encoding: StreamEncoding = "json",
    ) -> None:
        self.encoding = check_encoding(encoding)
        self.url = stream_url(base_url, model, encoding)
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
            await self._connection.send(step_message(observation, reward, done, truncated, self.encoding))
        return read_answer(await self._connection.recv(), self.encoding)

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
