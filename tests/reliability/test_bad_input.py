"""Bad input against a real server, beyond what tests/app already drives through TestClient: bodies that lie
about their length or stream past the limit on a raw socket, non-finite numbers spelled as strings, deep
nesting, booleans and strings for hyperparameters, and broken weights files wherever a file is read
(POLICY_FILE at start-up, `python -m trainer evaluate`).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from models.weights import read_header
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.app.servers import REPO, server_env
from tests.processes import run_process
from tests.reliability.conftest import API_KEY, Api, Processes

pytestmark = pytest.mark.slow

BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp_path = tmp_path_factory.mktemp("bad-input")
    policy = tmp_path / "actor.safetensors"
    policy.write_bytes(make_policy_bytes(3))
    group = Processes(tmp_path)
    try:
        yield group.api(
            f"sqlite:///{tmp_path / 'db.sqlite3'}",
            POLICY_FILE=str(policy),
            API_KEY=API_KEY,
            MAX_BODY_BYTES=str(BODY_LIMIT),
            MAX_BATCH="16",
        )
    finally:
        group.stop_all()


def _raw_exchange(server: Api, head: bytes, send_body: Callable[[socket.socket], None]) -> bytes:
    """Send a request by hand and return what the server answers, without ever finishing the body.

    The body is left incomplete on purpose: had the server waited to read it whole, `recv` would time out.
    """
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(head)
        send_body(sock)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def _status_and_json(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    # A chunked answer wraps the JSON in chunk sizes; the error body is small enough to be one chunk.
    if b"transfer-encoding: chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(body)


@pytest.mark.parametrize("path", ["/act", "/train"])
def test_a_huge_declared_length_is_413_before_the_body_is_read(server: Api, path: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Length: {10**12}\r\n\r\n"
    ).encode()
    answer = _raw_exchange(server, head, lambda sock: sock.sendall(b'{"observation": [0'))
    status, body = _status_and_json(answer)
    assert status == 413, answer
    assert_error_shape(body, "payload_too_large")


@pytest.mark.parametrize("path", ["/act", "/train"])
def test_a_chunked_body_over_the_limit_is_413_while_it_streams(server: Api, path: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()

    def stream(sock: socket.socket) -> None:
        piece = b'{"observations": [' + b"[0.0, 0.0, 0.0]," * 100
        for _ in range(3 * BODY_LIMIT // len(piece) + 1):  # past the limit, and never the final 0-chunk
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")

    status, body = _status_and_json(_raw_exchange(server, head, stream))
    assert status == 413
    assert_error_shape(body, "payload_too_large")
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"observation": ["NaN", 0, 0]}', "observation[0]"),
        (b'{"observation": [0, "Infinity", 0]}', "observation[1]"),
        (b'{"observation": [0, 0, "-inf"]}', "observation[2]"),
        (b'{"observation": [-Infinity, 0, 0]}', "body"),
        (b'{"observation": [1e999, 0, 0]}', "body"),  # overflows a double: not a finite JSON number
        (b'{"observation": [1e300, 0, 0]}', "observation[0]"),  # finite, but not as float32
        (b'{"observations": [[0, 0, 0], [0, NaN, 0]]}', "body"),
        (b'{"observations": [[0, 0, 0], [0, "1.5", 0]]}', "observations[1][1]"),
        (b'{"observation": [true, 0, 0]}', "observation[0]"),
        (b'{"observation": [0, 0, 0], "policy_id": "1"}', "policy_id"),
        (b'{"observation": [0, 0, 0], "policy_id": 1.0}', "policy_id"),
        (b'{"observation": [0, 0, 0], "policy_id": 99999999999}', "policy_id"),
        (b'{"observation": {"0": 1}}', "observation"),
        (b'{"observations": [[[0, 0, 0]]]}', "observations[0][0]"),
        (b'{"observation": ' + b"[" * 1500 + b"]" * 1500 + b"}", "body"),  # deeper than the parser allows
        (b'{"observations": [0, 0, 0]}', "observations[0]"),  # not a list of lists
        (b'{"observations": [' + b"[0, 0, 0]," * 16 + b"[0, 0, 0]]}", "observations"),  # 17 > MAX_BATCH
        (b"\xff\xfe\x00garbage", "body"),
        (b"null", "body"),
    ],
)
def test_act_rejects_non_finite_mistyped_and_junk_bodies_with_422(server: Api, content: bytes, field: str) -> None:
    response = httpx.post(f"{server.base_url}/act", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    error = assert_error_shape(response.json(), "validation_error")
    assert error["details"][0]["field"] == field, error  # type: ignore[index]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png"]
)
@pytest.mark.parametrize("path", ["/act", "/train"])
def test_non_json_content_types_are_415(server: Api, path: str, content_type: str) -> None:
    response = httpx.post(
        f"{server.base_url}{path}",
        content=b'{"observation": [0, 0, 0]}',
        headers={"Content-Type": content_type, "Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 415, response.text
    assert_error_shape(response.json(), "unsupported_media_type")


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"episodes": true}', "episodes"),
        (b'{"episodes": "20"}', "episodes"),
        (b'{"actor_lr": "1e-3"}', "actor_lr"),
        (b'{"gamma": NaN}', "gamma"),
        (b'{"tau": Infinity}', "tau"),
        (b'{"actor_lr": "NaN"}', "actor_lr"),
        (b'{"seed": 1e400}', "seed"),
        (b'{"episodes": 2.5}', "episodes"),
        (b'{"hidden_size": [64]}', "hidden_size"),
        (b'{"noise": {"kind": "ou"}}', "noise"),
        (b'{"episodes": 1000001}', "episodes"),
        (b'{"seed": -1}', "seed"),
        (b'{"replay_size": 1000000000000}', "replay_size"),
        (b'{"config": {"episodes": 5}}', "config"),
    ],
)
def test_train_rejects_out_of_bounds_mistyped_and_unknown_hyperparameters(
    server: Api, content: bytes, field: str
) -> None:
    response = httpx.post(
        f"{server.base_url}/train",
        content=content,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 422, response.text
    error = assert_error_shape(response.json(), "validation_error")
    assert [detail["field"] for detail in error["details"]] == [field], error  # type: ignore[attr-defined]


def test_train_rejects_non_object_bodies(server: Api) -> None:
    for content in (b"[]", b'"episodes"', b"", b"{", b'{"episodes": 1,}'):
        response = httpx.post(
            f"{server.base_url}/train",
            content=content,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 422, (content, response.text)
        assert_error_shape(response.json(), "validation_error")


def test_unknown_ids_are_404_and_out_of_range_ids_422(server: Api) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for method, path in [
        ("GET", "/jobs/424242"),
        ("GET", "/jobs/424242/rewards"),
        ("POST", "/jobs/424242/cancel"),
        ("GET", "/policies/424242"),
        ("GET", "/policies/424242/weights"),
        ("POST", "/policies/424242/promote"),  # promotion of a missing policy
    ]:
        response = httpx.request(method, f"{server.base_url}{path}", headers=auth)
        assert response.status_code == 404, (path, response.text)
        assert_error_shape(response.json(), "not_found")
    for path in ["/jobs/0", "/jobs/99999999999", "/policies/abc", "/policies/-3/weights"]:
        response = httpx.get(f"{server.base_url}{path}")
        assert response.status_code == 422, (path, response.text)
        assert_error_shape(response.json(), "validation_error")
    # The default policy is untouched by the failed promotion.
    assert httpx.get(f"{server.base_url}/readyz").json()["policy_id"] == 1


# ---- broken weights files, wherever a file is read --------------------------------------------------------


def _reencoded(transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> bytes:
    """A valid actor's tensors changed by `transform`, saved as safetensors with the original metadata."""
    from safetensors.numpy import load

    data = make_policy_bytes(3)
    metadata = read_header(data)["__metadata__"]
    return save(transform(load(data)), metadata=metadata)


def _with_nan(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors["linear2.weight"][0, 0] = np.nan
    return tensors


def _wrong_shape(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors["linear1.weight"] = np.zeros((8, 5), dtype=tensors["linear1.weight"].dtype)
    return tensors


def _corrupt_header(data: bytes) -> bytes:
    (size,) = struct.unpack("<Q", data[:8])
    return data[:8] + data[8 : 8 + size].replace(b'"', b"'", 3) + data[8 + size :]


BAD_WEIGHTS: dict[str, Callable[[], bytes]] = {
    "corrupt": lambda: _corrupt_header(make_policy_bytes(3)),
    "truncated": lambda: make_policy_bytes(3)[:-100],
    "wrong-shaped": lambda: _reencoded(_wrong_shape),
    "non-finite": lambda: _reencoded(_with_nan),
    # What `torch.save` writes (a zip around a pickle): must be refused, never unpickled.
    "pickle": lambda: b"PK\x03\x04" + b"\x80\x04\x95" + b"\x00" * 200,
    "empty": lambda: b"",
}


@pytest.fixture(params=sorted(BAD_WEIGHTS))
def bad_weights(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"{request.param}.safetensors"
    path.write_bytes(BAD_WEIGHTS[request.param]())
    return path


def test_bad_policy_file_stops_start_up_with_a_clear_message(
    bad_weights: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from app.__main__ import main

    for name, value in server_env(tmp_path, POLICY_FILE=str(bad_weights), EMBEDDED_WORKER="false").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("the server started"))
    assert main() == 2
    assert f"POLICY_FILE {bad_weights} is not a valid policy file (ddpg-actor/1 or policy-mlp/1)" in caplog.text


def test_trainer_evaluate_refuses_bad_weights_with_a_message(
    bad_weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trainer.cli import main

    assert main(["evaluate", str(bad_weights), "--episodes", "1"]) == 1
    assert str(bad_weights) in caplog.text


@pytest.mark.parametrize("kind", ["pickle", "wrong-shaped"])
def test_bad_weights_as_real_processes(kind: str, tmp_path: Path) -> None:
    """The same two refusals from the real command lines: exit codes and one readable line, no traceback."""
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(BAD_WEIGHTS[kind]())
    env = server_env(tmp_path, POLICY_FILE=str(path), EMBEDDED_WORKER="false", BOOTSTRAP_JOB="false", PORT="1")
    app = run_process([sys.executable, "-m", "app"], cwd=REPO, env=env, timeout=60)
    assert app.returncode == 2, app.stdout + app.stderr
    assert f"POLICY_FILE {path} is not a valid" in app.stderr and "Traceback" not in app.stderr
    evaluate = run_process([sys.executable, "-m", "trainer", "evaluate", str(path), "--episodes", "1"], timeout=120)
    assert evaluate.returncode == 1, evaluate.stdout + evaluate.stderr
    assert str(path) in evaluate.stderr and "Traceback" not in evaluate.stderr
