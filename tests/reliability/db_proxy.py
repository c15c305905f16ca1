"""A TCP proxy between the processes under test and PostgreSQL, for fault tests.

It relays bytes both ways and can
- cut: close every open connection and refuse new ones, for a while (`cut(seconds)`) or until `restore()`;
- lose one COMMIT reply: forward a client's `COMMIT` to the server, let the server commit, drop its reply
  (CommandComplete "COMMIT" and ReadyForQuery) and close the client's connection, so the client sees an error
  although the transaction landed (`lose_next_commit()`).

It reads the PostgreSQL wire protocol only as far as that needs: the untyped start-up packets, then typed messages
(one type byte, a 4-byte big-endian length counting itself). psycopg 3 sends `BEGIN`, `COMMIT` and `ROLLBACK` as
simple queries ('Q'), which is what is recognised; a marker (a loss only for a transaction that touched some
table) is looked for in simple queries, Parse messages, and Bind messages of statements prepared with it. The
proxy answers an SSLRequest or GSSENCRequest itself with 'N' (not supported), so the session stays in clear text
and can be read.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_COMMIT = b"COMMIT"
_ENDS_TRANSACTION = (b"COMMIT", b"ROLLBACK", b"END", b"ABORT")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _simple_query_text(message: bytes) -> bytes:
    """The statement of a 'Q' message, upper-cased, without the NUL, blanks and a trailing ';'."""
    return message[5:].rstrip(b"\x00").strip().rstrip(b";").strip().upper()


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Connection:
    """One client connection and its upstream, with what the COMMIT-loss needs to know about it."""

    client: socket.socket
    upstream: socket.socket
    losing: bool = False  # this connection's COMMIT was forwarded and its reply is to be dropped
    marked: bool = False  # the open transaction sent a statement containing the loss's marker
    # The text of each named prepared statement: psycopg prepares a query it runs often, and then sends only Bind
    # messages naming it.
    prepared: dict[bytes, bytes] = field(default_factory=dict)
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class DbProxy:
    """127.0.0.1:<free port> -> target, stoppable and restartable on the same port (see the module docstring)."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.commits_lost = 0  # how many COMMIT replies were dropped so far
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._lose_marker: bytes | None = None  # armed: lose the next COMMIT of a transaction containing this
        self._lost = threading.Condition(self._lock)
        self._restore_timer: threading.Timer | None = None

    def url_for(self, database_url: str) -> str:
        """The same database URL, through this proxy."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    @property
    def running(self) -> bool:
        return self._listener is not None

    # ---- cut and restore

    def start(self) -> None:
        """Listen (again) on the proxy's port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="db-proxy-accept", daemon=True).start()

    restore = start

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (both directions)."""
        timer, self._restore_timer = self._restore_timer, None
        if timer is not None:
            timer.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            open_connections, self._connections = self._connections, set()
        for connection in open_connections:
            connection.close()

    def cut(self, seconds: float | None = None) -> None:
        """Cut every connection and refuse new ones; for `seconds` if given, else until `restore()`."""
        self.stop()
        if seconds is not None:
            timer = threading.Timer(seconds, self._restore_after_cut)
            timer.daemon = True
            self._restore_timer = timer
            timer.start()

    def _restore_after_cut(self) -> None:
        self._restore_timer = None
        if not self.running:
            self.start()

    # ---- one lost COMMIT reply

    def lose_next_commit(self, marker: bytes = b"") -> None:
        """Arm: the next COMMIT (of a transaction that sent a statement containing `marker`, if given) reaches the
        server, but its reply never reaches the client, whose connection is closed instead."""
        with self._lock:
            self._lose_marker = marker

    def wait_commit_lost(self, timeout: float) -> bool:
        """Wait until an armed loss has happened; False after `timeout` seconds."""
        with self._lost:
            return self._lost.wait_for(lambda: self._lose_marker is None, timeout)

    # ---- relaying

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                # The relay writes a message at a time: with Nagle's algorithm on, a write that follows another
                # unacknowledged one waits for the peer's delayed ACK (40 ms), on nearly every round trip.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(client, upstream)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    connection.close()
                    return
                self._connections.add(connection)
            threading.Thread(target=self._client_to_server, args=(connection,), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(connection,), daemon=True).start()

    def _client_to_server(self, connection: _Connection) -> None:
        try:
            if not self._startup(connection):
                return
            for message in _messages(connection.client):
                if message[:1] in (b"Q", b"P", b"B"):
                    self._watch(connection, message)
                connection.upstream.sendall(message)
        except OSError:
            pass
        finally:
            self._forget(connection)

    def _startup(self, connection: _Connection) -> bool:
        """Relay the untyped start-up packets; answer SSL and GSS encryption requests with 'N' here."""
        while True:
            header = _read_exactly(connection.client, 8)
            if header is None:
                return False
            length, code = struct.unpack("!ii", header)
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                connection.client.sendall(b"N")
                continue
            rest = _read_exactly(connection.client, length - 8)
            if rest is None:
                return False
            connection.upstream.sendall(header + rest)
            return True

    def _watch(self, connection: _Connection, message: bytes) -> None:
        """Note a transaction that touches the marker, and arm this connection's loss at its COMMIT."""
        kind = message[:1]
        statement = _simple_query_text(message) if kind == b"Q" else b""
        if kind == b"P":  # Parse: name NUL query NUL ...
            name, query = message[5:].split(b"\x00", 2)[:2]
            if name:
                connection.prepared[name] = query
        elif kind == b"B":  # Bind: portal NUL statement NUL ...: what it runs is the prepared statement's text
            message = connection.prepared.get(message[5:].split(b"\x00", 2)[1], b"")
        with self._lock:
            marker = self._lose_marker
            if marker and marker in message:
                connection.marked = True
            if statement == _COMMIT and marker is not None and (connection.marked or not marker):
                self._lose_marker = None
                connection.losing = True
                logger.info("db proxy: losing the reply to a COMMIT")
            if statement.startswith(_ENDS_TRANSACTION):
                connection.marked = False

    def _server_to_client(self, connection: _Connection) -> None:
        try:
            for message in _messages(connection.upstream):
                if not connection.losing:
                    connection.client.sendall(message)
                elif message[:1] == b"Z":  # the COMMIT has been processed: the client gets no answer at all
                    with self._lost:
                        self.commits_lost += 1
                        self._lost.notify_all()
                    return
        except OSError:
            pass
        finally:
            self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        with self._lock:
            self._connections.discard(connection)


def _messages(sock: socket.socket) -> Iterator[bytes]:
    """Whole typed messages (type byte, length, body) read from a socket, until end of stream."""
    reader = sock.makefile("rb")
    while len(header := reader.read(5)) == 5:
        (length,) = struct.unpack("!i", header[1:])
        body = reader.read(length - 4)
        if len(body) != length - 4:
            return
        yield header + body


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None at end of stream."""
    chunks = bytearray()
    while len(chunks) < size:
        data = sock.recv(size - len(chunks))
        if not data:
            return None
        chunks += data
    return bytes(chunks)
