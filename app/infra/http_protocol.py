"""uvicorn's httptools protocol with the two bounds it lacks: the size of an unfinished request head, and the time a
request may take to arrive.

`python -m app` serves with httptools (faster than h11 for /act), and uvicorn's `h11_max_incomplete_event_size` only
bounds h11: httptools buffers a request head however long it grows (8 unfinished 32 MB headers cost +310 MB that
was not given back). Here the bytes of a head still incomplete after a read are counted, and past `max_head_bytes`
the connection gets 431 and is closed: at most one read (64 KiB) beyond the bound is ever buffered.

A client that starts a request and then sends it slowly (slowloris: a declared body a byte at a time, or a head that
never ends) holds a connection and a task for as long as it likes. A request that has not fully arrived
`request_timeout` seconds after its first incomplete read gets 408 (or, once the application has answered, just the
closed connection). A request that arrives in one read, as nearly all do, never starts a timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


def _error_response(status: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response in the service's error shape that closes the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message, "details": []}})
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bound on an unfinished request head and a deadline for a request to arrive."""

    def __init__(self, *args: Any, max_head_bytes: int, request_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self.request_timeout = request_timeout
        self._head_open = False  # a request's head has begun and is not complete yet
        self._head_bytes = 0
        self._message_open = False  # a request has begun and has not fully arrived
        self._deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.parser is None:
            return
        if self._head_open:
            # The whole read is counted (it may also hold earlier pipelined requests): a bound, not an exact size.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._reject(
                    "431 Request Header Fields Too Large",
                    "request_header_fields_too_large",
                    f"the request head exceeds {self.max_head_bytes} bytes",
                )
                return
        if self._message_open and self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = self._message_open = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._message_open = False
        self._cancel_deadline()

    def handle_websocket_upgrade(self) -> None:
        # From here on the connection is a WebSocket's, with frames bounded by ws_max_size: nothing of ours applies.
        self._cancel_deadline()
        self._head_open = self._message_open = False
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        logger.warning("%s took over %.0f s to send its request; connection closed", self._peer(), self.request_timeout)
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(
                _error_response(
                    "408 Request Timeout",
                    "request_timeout",
                    f"the request did not arrive within {self.request_timeout:g} s",
                )
            )
        self.transport.close()

    def _reject(self, status: str, code: str, message: str) -> None:
        logger.warning("%s: %s; connection closed", self._peer(), message)
        self._cancel_deadline()
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_error_response(status, code, message))
        self.transport.close()
