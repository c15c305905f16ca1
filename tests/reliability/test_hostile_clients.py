"""Hostile clients against a real `python -m app`: idle event streams by the thousand, oversized WebSocket frames,
unfinished huge request heads, bodies sent a byte at a time, more connections than LIMIT_CONCURRENCY.

Each test states what the service must still do (answer /readyz, serve a promotion, answer /act, keep its memory);
waits are bounded, and the only timed assertions are the generous bounds the service promises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from store.db import create_db_engine, make_session_factory
from store.policies import register_policy
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.reliability.conftest import TINY_JOB, Api, Processes, wait_for

pytestmark = pytest.mark.slow

# The figures docs/RELIABILITY.md quotes: `pytest ... -o log_cli=true --log-cli-level=INFO` shows them.
logger = logging.getLogger(__name__)

OBSERVATION = {"observation": [0.1, 0.2, 0.3]}
# The full figure of the reproduction; held open from one test process in a few seconds.
IDLE_EVENT_STREAMS = 1500


def rss_kib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1))


def act_latencies(api: Api, count: int) -> list[float]:
    """Seconds per /act, `count` in a row (each must answer 200)."""
    latencies = []
    with api.client() as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.post("/act", json=OBSERVATION)
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
    return latencies


def open_event_stream(port: int, job_id: int) -> socket.socket:
    """A raw connection that has read its event stream's head and `retry:` preamble, then stays idle."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n".encode())
    received = b""
    while b"retry:" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"stream closed early: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return sock


def stream_status(url: str) -> int:
    """The status of a GET whose body (an endless stream) is not read."""
    with httpx.stream("GET", url, timeout=5) as response:
        return response.status_code


@contextlib.contextmanager
def held(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_idle_event_streams_starve_neither_readiness_nor_a_promotion(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(sqlite_url, POLICY_FILE=str(policy_file), MAX_EVENT_STREAMS=str(IDLE_EVENT_STREAMS))
    port = int(api.base_url.rsplit(":", 1)[1])
    with api.client() as client:
        job_id = client.post("/train", json=TINY_JOB).json()["id"]  # queued for good: no worker, an idle stream
    engine = create_db_engine(sqlite_url)
    try:
        with make_session_factory(engine)() as session:
            challenger = register_policy(session, weights=make_policy_bytes(8), promote="never").id
            session.commit()
    finally:
        engine.dispose()

    start = time.monotonic()
    with held([open_event_stream(port, job_id) for _ in range(IDLE_EVENT_STREAMS)]) as streams:
        opened_in = time.monotonic() - start
        with api.client() as client:
            for _ in range(10):
                assert client.get("/readyz").status_code == 200
            # One more than MAX_EVENT_STREAMS: refused in the one error shape, with Retry-After.
            refused = client.get(f"/jobs/{job_id}/events")  # a 503 is not a stream: it ends
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert_error_shape(refused.json(), "too_many_event_streams")
            promoted_at = time.monotonic()
            assert client.post(f"/policies/{challenger}/promote").status_code == 200
            while client.post("/act", json=OBSERVATION).json()["policy_id"] != challenger:
                assert time.monotonic() - promoted_at < 2.0, "the promotion did not reach /act within 2 s"
            reached_act_in = time.monotonic() - promoted_at
        rss_with_streams = rss_kib(api.process.pid)
        assert len(streams) == IDLE_EVENT_STREAMS
    # Streams closed by their clients free their places.
    wait_for(lambda: stream_status(f"{api.base_url}/jobs/{job_id}/events") == 200, "a place")
    logger.info(
        f"{IDLE_EVENT_STREAMS} streams opened in {opened_in:.1f} s, server RSS {rss_with_streams / 1024:.0f} MiB; "
        f"promotion reached /act in {reached_act_in:.3f} s"
    )


def frame_start(length: int, sample: bytes) -> bytes:
    """The head of a masked text frame declaring `length` bytes, and `sample` as the start of its payload."""
    mask = os.urandom(4)
    head = bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big") + mask
    return head + bytes(byte ^ mask[i % 4] for i, byte in enumerate(sample))


def test_a_websocket_frame_over_max_body_bytes_closes_with_1009_and_act_still_answers(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(sqlite_url, POLICY_FILE=str(policy_file))  # MAX_BODY_BYTES: 4 MiB
    url = api.base_url.replace("http://", "ws://") + "/act/stream"
    five_mib = 5 * 1024 * 1024
    # The close code, as a client sees it: the server reads the frame's declared length and closes with 1009 at
    # once. (A client still pushing the rest of a 5 MiB frame then gets a reset that may swallow the close frame,
    # so here the frame's head and its first 64 KiB are sent, and the rest never.)
    with connect(url, open_timeout=30) as stream:
        stream.socket.sendall(frame_start(five_mib, b"x" * 65536))
        with pytest.raises(ConnectionClosed) as closed:
            stream.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value

    frame = json.dumps({"observation": [0.1] * (five_mib // 4)})  # 5 MiB of JSON, sent whole
    assert len(frame) > five_mib
    before = act_latencies(api, 50)
    ended = 0

    def push_frames() -> None:
        nonlocal ended
        for _ in range(20):
            with connect(url, max_size=None, compression=None, open_timeout=30) as stream:
                with contextlib.suppress(ConnectionClosed):
                    stream.send(frame)
                with pytest.raises(ConnectionClosed):
                    stream.recv(timeout=30)
                ended += 1

    pusher = threading.Thread(target=push_frames)
    pusher.start()
    during = []
    while pusher.is_alive():
        during += act_latencies(api, 5)
    pusher.join()
    assert ended == 20
    # A frame within the limit is still answered, and /act is not slowed beyond a wide margin.
    with connect(url) as stream:
        stream.send(json.dumps(OBSERVATION))
        assert "action" in json.loads(stream.recv(timeout=10))
    assert max(during) < 1.0, max(during)
    logger.info(
        f"/act ms without frames: median {statistics.median(before) * 1e3:.2f} max {max(before) * 1e3:.2f}; "
        f"during 20 frames of 5 MiB ({len(during)} requests): median {statistics.median(during) * 1e3:.2f} "
        f"max {max(during) * 1e3:.2f}"
    )


def send_until_refused(sock: socket.socket, head: bytes, filler_bytes: int) -> bytes:
    """Send `head` then `filler_bytes` of a header value that never ends; what the server answered, if anything."""
    chunk = b"a" * (1024 * 1024)
    with contextlib.suppress(OSError):
        sock.sendall(head)
        for _ in range(filler_bytes // len(chunk)):
            sock.sendall(chunk)
    sock.settimeout(5)
    with contextlib.suppress(OSError):
        return sock.recv(65536)
    return b""


def test_unfinished_huge_request_heads_are_refused_and_do_not_grow_memory(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(sqlite_url, POLICY_FILE=str(policy_file))  # MAX_HEADER_BYTES: 64 KiB
    port = int(api.base_url.rsplit(":", 1)[1])
    act_latencies(api, 20)  # warm
    before = rss_kib(api.process.pid)
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    with held(sockets):
        answers = [
            send_until_refused(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: ", 32 * 1024 * 1024)
            for sock in sockets
        ]
        after = rss_kib(api.process.pid)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert_error_shape(json.loads(answer.split(b"\r\n\r\n", 1)[1]), "request_header_fields_too_large")
    growth_mib = (after - before) / 1024
    assert growth_mib < 32, f"RSS grew by {growth_mib:.1f} MiB"
    assert httpx.get(f"{api.base_url}/healthz").status_code == 200
    logger.info(f"8 unfinished 32 MiB heads: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB ({growth_mib:+.1f})")


def test_a_request_sent_a_byte_at_a_time_is_dropped_after_body_timeout_seconds(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(sqlite_url, POLICY_FILE=str(policy_file), BODY_TIMEOUT_SECONDS="1")
    port = int(api.base_url.rsplit(":", 1)[1])
    slow_body = b"POST /act HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: test\r\n"
    for start, trickle in ((slow_body, b" "), (slow_head, b"X-A: b\r\n")):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(start)
            sock.settimeout(0.25)
            began = time.monotonic()
            answer = b""
            while time.monotonic() - began < 20:
                with contextlib.suppress(OSError):
                    sock.sendall(trickle)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                answer += data
                if not data:
                    break
            dropped_after = time.monotonic() - began
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert dropped_after < 10, dropped_after
        logger.info("%r... sent slowly: 408 after %.2f s", start[:20], dropped_after)
    # A request that arrives normally is not affected, even several on one connection.
    with api.client() as client:
        for _ in range(5):
            assert client.post("/act", json=OBSERVATION).status_code == 200
            time.sleep(0.5)
    assert "took over 1 s to send its request" in api.log_path.read_text()


def test_limit_concurrency_refuses_connections_beyond_it(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(sqlite_url, POLICY_FILE=str(policy_file), LIMIT_CONCURRENCY="3")
    port = int(api.base_url.rsplit(":", 1)[1])
    assert httpx.get(f"{api.base_url}/healthz").status_code == 200
    # Three connections that began a request and never finished it: the limit is reached.
    with held([socket.create_connection(("127.0.0.1", port)) for _ in range(3)]) as idle:
        for sock in idle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        wait_for(lambda: httpx.get(f"{api.base_url}/healthz").status_code == 503, "a 503 past LIMIT_CONCURRENCY")
    wait_for(lambda: httpx.get(f"{api.base_url}/healthz").status_code == 200, "the limit freed")


def test_websocket_connections_are_logged_only_with_the_access_log(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    for access_log in ("false", "true"):
        api = processes.api(sqlite_url, POLICY_FILE=str(policy_file), ACCESS_LOG=access_log)
        with connect(api.base_url.replace("http://", "ws://") + "/act/stream") as stream:
            stream.send(json.dumps(OBSERVATION))
            stream.recv(timeout=10)
        assert api.terminate() == 0
        log = api.log_path.read_text()
        lines = [line for line in log.splitlines() if "WebSocket /act/stream" in line or "connection open" in line]
        if access_log == "true":
            assert any('"WebSocket /act/stream" [accepted]' in line for line in lines), log[-3000:]
        else:
            assert lines == [], lines
