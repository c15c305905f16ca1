"""The two clients: one set of calls (`ddpg_client.protocol`), carried out over httpx either sync or async.

`ServiceCalls` lists every call once. Each is an `endpoint`: looked up on a `PolicyClient` it is a plain
method; on an `AsyncPolicyClient` it returns an awaitable. The clients themselves only own their httpx
connection pool and run an operation's effects (send a request, sleep) their own way.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Generic, ParamSpec, Self, TypeVar, overload
from urllib.parse import quote

import httpx

from ddpg_client import protocol
from ddpg_client.errors import error_from_response
from ddpg_client.protocol import DEFAULT_TIMEOUT_SECONDS, Operation, Request, Sleep, default_headers

if TYPE_CHECKING:  # websockets is imported when a stream is opened, so plain HTTP use never needs it
    from ddpg_client.drive import DrivenEpisode, Environment
    from ddpg_client.stream import ActStream, AsyncActStream, StreamEncoding

P = ParamSpec("P")
T = TypeVar("T")


class endpoint(Generic[P, T]):  # noqa: N801 - used like a decorator, so named like a function
    """One call of the API, bound to a client on attribute access: `client.act(...)` runs `protocol.act(...)`.

    On a `PolicyClient` the bound call returns the result; on an `AsyncPolicyClient` it returns a coroutine of
    it. The bound call has the operation's name, docstring and signature (`help(client.act)` shows them).
    """

    def __init__(self, operation: Callable[P, Operation[T]]) -> None:
        self.operation = operation
        self.attribute = operation.__name__
        self.__doc__ = operation.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attribute = name

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, client: PolicyClient, owner: type[Any]) -> Callable[P, T]: ...

    @overload
    def __get__(self, client: AsyncPolicyClient, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, client: object, owner: type[Any]) -> Any:
        if client is None:
            return self
        if not isinstance(client, PolicyClient | AsyncPolicyClient):
            raise TypeError(f"{self.operation.__name__} is a call of PolicyClient or AsyncPolicyClient")
        operation = self.operation
        run = client._run

        @functools.wraps(operation)
        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(operation(*args, **kwargs))

        # Bound once per client: the instance attribute now shadows this (non-data) descriptor.
        client.__dict__[self.attribute] = call
        return call


class ServiceCalls:
    """Every call the service offers, once; both clients inherit them."""

    act = endpoint(protocol.act)
    act_batch = endpoint(protocol.act_batch)
    train = endpoint(protocol.train)
    job = endpoint(protocol.job)
    jobs = endpoint(protocol.jobs)
    cancel = endpoint(protocol.cancel)
    wait = endpoint(protocol.wait)
    rewards = endpoint(protocol.rewards)
    policies = endpoint(protocol.policies)
    policy = endpoint(protocol.policy)
    promote = endpoint(protocol.promote)
    ready = endpoint(protocol.ready)
    learner = endpoint(protocol.learner)


def _send_kwargs(request: Request) -> dict[str, Any]:
    return {"json": request.json, "params": request.params}


class PolicyClient(ServiceCalls):
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
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=default_headers(api_key, headers), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def stream(self, model: str | None = None, *, encoding: StreamEncoding = "json") -> ActStream:
        """A control-loop session over `WS /act/stream` (this client's key and headers): `with client.stream():`.
        `encoding="msgpack"`: binary frames instead of JSON text."""
        from ddpg_client.stream import ActStream

        return ActStream(
            self.base_url, model=model, headers=self._http.headers, timeout=self._timeout, encoding=encoding
        )

    def drive(
        self,
        env: Environment | str,
        *,
        model: str,
        episodes: int,
        seed: int | None = None,
        max_steps: int | None = None,
        progress: bool | None = None,
        max_lag: int | None = None,
    ) -> list[DrivenEpisode]:
        """Run an environment that lives here on the model's actions over `WS /act/stream`, with rewards and episode
        ends, so the service records them (and an online learner learns from them); ddpg_client.drive."""
        from ddpg_client.drive import drive

        return drive(
            self,
            env,
            model=model,
            episodes=episodes,
            seed=seed,
            max_steps=max_steps,
            progress=progress,
            max_lag=max_lag,
        )

    def download_experience(
        self,
        model: str,
        sink: IO[bytes],
        *,
        format: str = "minari",
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Stream `GET /models/{model}/experience/dataset?format=...` into `sink`; the bytes written.

        `on_progress(received, total)` is called after each block (total: the Content-Length, None if not sent).
        A model without recordings, an unknown model or format raise the matching ServiceError.
        """
        path = f"/models/{quote(model, safe='')}/experience/dataset"
        with self._http.stream("GET", path, params={"format": format}, timeout=None) as response:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            length = response.headers.get("content-length")
            total = int(length) if length is not None and length.isdigit() else None
            received = 0
            for block in response.iter_bytes(1 << 16):
                sink.write(block)
                received += len(block)
                if on_progress is not None:
                    on_progress(received, total)
        return received

    def _run(self, operation: Operation[T]) -> T:
        """Carry out the operation's effects in order and return its result."""
        try:
            effect = next(operation)
            while True:
                if isinstance(effect, Sleep):
                    time.sleep(effect.seconds)
                    effect = operation.send(None)
                else:
                    response = self._http.request(effect.method, effect.path, **_send_kwargs(effect))
                    effect = operation.send(response)
        except StopIteration as finished:
            result: T = finished.value
            return result
        finally:
            operation.close()


class AsyncPolicyClient(ServiceCalls):
    """The same calls as `PolicyClient`, for asyncio code (`async with AsyncPolicyClient(...) as client:`)."""

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
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=default_headers(api_key, headers), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def stream(self, model: str | None = None, *, encoding: StreamEncoding = "json") -> AsyncActStream:
        """A control-loop session over `WS /act/stream`: `async with client.stream() as stream:`.
        `encoding="msgpack"`: binary frames instead of JSON text."""
        from ddpg_client.stream import AsyncActStream

        return AsyncActStream(
            self.base_url, model=model, headers=self._http.headers, timeout=self._timeout, encoding=encoding
        )

    async def _run(self, operation: Operation[T]) -> T:
        """Carry out the operation's effects in order, without blocking the event loop, and return its result."""
        try:
            effect = next(operation)
            while True:
                if isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
                    effect = operation.send(None)
                else:
                    response = await self._http.request(effect.method, effect.path, **_send_kwargs(effect))
                    effect = operation.send(response)
        except StopIteration as finished:
            result: T = finished.value
            return result
        finally:
            operation.close()
