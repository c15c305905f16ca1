"""Security with a real server: every mutating endpoint needs the API key, wrong or missing keys get 401 and
change nothing, the key never reaches the logs, nothing is ever unpickled, and the limits are documented."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.app.factories import assert_error_shape
from tests.app.servers import REPO
from tests.reliability.conftest import API_KEY, TINY_JOB, Processes

pytestmark = pytest.mark.slow

ACT_KEY = "act-" + API_KEY[::-1]


def _is_inference(path: str) -> bool:
    """/act and the KServe predict/infer routes: guarded by ACT_API_KEY, not API_KEY (KServe has its own error
    shape, `{"error": "..."}`, so only the status is checked there)."""
    return path == "/act" or path.startswith(("/v1/models", "/v2/models"))


def _mutating_operations(openapi: dict[str, Any], *, inference: bool) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        for method in item
        if method in {"post", "put", "patch", "delete"} and _is_inference(path) == inference
    ]


def _concrete(path: str, job_id: int, policy_id: int) -> str:
    concrete = path.replace("{job_id}", str(job_id)).replace("{policy_id}", str(policy_id))
    return re.sub(r"\{[a-z_]+\}", "1", concrete)  # any other parameter, e.g. a KServe model name


def test_mutating_endpoints_need_the_key_and_the_key_never_reaches_the_logs(
    processes: Processes, sqlite_url: str, policy_file: Path
) -> None:
    api = processes.api(
        sqlite_url,
        POLICY_FILE=str(policy_file),
        API_KEY=API_KEY,
        ACT_API_KEY=ACT_KEY,
        LOG_LEVEL="DEBUG",  # log as much as the service ever does
        ACCESS_LOG="true",
    )
    with api.client(API_KEY) as admin:
        openapi = admin.get("/openapi.json").json()
        operations = _mutating_operations(openapi, inference=False)
        inference = _mutating_operations(openapi, inference=True)
        assert {
            ("POST", "/train"),
            ("POST", "/jobs/{job_id}/cancel"),
            ("POST", "/policies/{policy_id}/promote"),
        } <= set(operations)
        job_id = admin.post("/train", json=TINY_JOB).json()["id"]
        before = admin.get(f"/jobs/{job_id}").json()

    bad_credentials: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},  # all but the last character
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
        {"Authorization": f"Bearer {ACT_KEY}"},  # the /act key is not the admin key
        {"X-API-Key": API_KEY},
    ]
    for method, template in operations:
        path = _concrete(template, job_id, 1)
        for headers in bad_credentials:
            response = httpx.request(method, f"{api.base_url}{path}", json=TINY_JOB, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert_error_shape(response.json(), "unauthorized")
            assert API_KEY not in response.text
    # Nothing happened: still one job, still queued, no new policy.
    with api.client(API_KEY) as admin:
        assert admin.get("/jobs").json()["total"] == 1
        assert admin.get(f"/jobs/{job_id}").json() == before
        assert admin.get("/policies").json()["total"] == 1
        for method, template in operations:  # the right key gets past auth (whatever the endpoint then says)
            response = admin.request(method, _concrete(template, job_id, 1), json=TINY_JOB)
            assert response.status_code != 401, (method, template, response.text)
    # Inference has its own key: the admin key and no key are refused, the ACT key is let through.
    for method, template in inference:
        url = f"{api.base_url}{_concrete(template, job_id, 1)}"
        for headers in [*bad_credentials[:4], {"Authorization": f"Bearer {API_KEY}"}]:
            response = httpx.request(method, url, json={"observation": [0, 0, 0]}, headers=headers)
            assert response.status_code == 401, (method, template, headers, response.text)
            assert API_KEY not in response.text and ACT_KEY not in response.text
        response = httpx.request(
            method, url, json={"observation": [0, 0, 0]}, headers={"Authorization": f"Bearer {ACT_KEY}"}
        )
        assert response.status_code != 401, (method, template, response.text)
    act = httpx.post(
        f"{api.base_url}/act", json={"observation": [0, 0, 0]}, headers={"Authorization": f"Bearer {ACT_KEY}"}
    )
    assert act.status_code == 200
    # The stream's handshake: uvicorn's WebSocket implementation logs every request header at DEBUG.
    stream_url = api.base_url.replace("http://", "ws://") + "/act/stream"
    refused = [h for h in bad_credentials if h != {"Authorization": f"Bearer {ACT_KEY}"}]
    for headers in [*refused, {"Authorization": f"Bearer {API_KEY}"}]:
        # Refused after the handshake: the error body, then the close code 1008 (docs/API.md).
        with connect(stream_url, additional_headers=headers, open_timeout=10) as refused_stream:
            assert '"unauthorized"' in str(refused_stream.recv(timeout=10))
            with pytest.raises(ConnectionClosed) as closed:
                refused_stream.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    for headers in ({"Authorization": f"Bearer {ACT_KEY}"}, {"Authorization": f"bearer {ACT_KEY}", "Cookie": ACT_KEY}):
        with connect(stream_url, additional_headers=headers, open_timeout=10) as stream:
            stream.send('{"observation": [0, 0, 0]}')
            assert "action" in stream.recv(timeout=10)

    assert api.terminate() == 0
    log = api.log_path.read_text(errors="replace")
    assert "GET /openapi.json" in log  # the access log was on: requests were logged, just not the key
    assert "< authorization: [redacted]" in log  # the handshake's headers were logged at DEBUG, redacted
    assert API_KEY not in log and API_KEY[:12] not in log
    assert ACT_KEY not in log and ACT_KEY[:12] not in log


# Anything that can run code while loading a file. The project reads weights with safetensors only; the one
# exception is the restricted reader of uploaded torch state dicts (SB3's policy.pth), checked on its own below.
UNPICKLING = re.compile(
    r"\btorch\.load\b|\bpickle\b|\bcPickle\b|\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True|\bnp\.load\b|"
    r"\bnumpy\.load\b|\bshelve\b|\bmarshal\.loads?\b|yaml\.load\(|\bUnpickler\b"
)
RESTRICTED_READER = Path("models/imports/safe_pickle.py")


def code_lines(path: Path) -> dict[int, str]:
    """The source's code without its comments and string literals (docstrings and messages may name pickle)."""
    lines: dict[int, list[str]] = {}
    with path.open("rb") as source:
        for token in tokenize.tokenize(source.readline):
            if token.type in (tokenize.COMMENT, tokenize.STRING, tokenize.ENCODING) or not token.string.strip():
                continue
            lines.setdefault(token.start[0], []).append(token.string)
    return {number: " ".join(parts) for number, parts in lines.items()}


def test_nothing_is_unpickled_anywhere_in_the_source() -> None:
    offenders = []
    for package in ("app", "store", "trainer", "models", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.relative_to(REPO) == RESTRICTED_READER:
                continue
            for number, code in code_lines(path).items():
                if UNPICKLING.search(code.replace(" . ", ".").replace(" .", ".").replace(". ", ".")):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {code}")
    assert offenders == []
    # The restricted reader decides every global a pickle names itself (find_class), and is the only unpickler.
    reader = (REPO / RESTRICTED_READER).read_text()
    assert reader.count("pickle.Unpickler)") == 1 and "def find_class(self, module: str, name: str)" in reader
    assert "pickle.load(" not in reader and "pickle.loads(" not in reader
    assert UNPICKLING.search("state = torch.load(path)") and UNPICKLING.search("import pickle")


def test_limits_exist_and_are_documented() -> None:
    from app.main import create_app
    from app.schemas.train import TrainRequest
    from app.settings import Settings

    fields = Settings.model_fields
    for name in (
        "max_body_bytes",
        "max_batch",
        "max_queued_jobs",
        "train_max_episodes",
        "train_max_episode_steps",
        "train_max_hidden_size",
        "train_max_batch_size",
        "train_max_replay_size",
    ):
        assert fields[name].description, name
        assert fields[name].default is not None, name
    openapi = create_app(Settings(database_url="sqlite://")).openapi()
    for path in ("/act", "/train"):
        responses = openapi["paths"][path]["post"]["responses"]
        assert {"413", "415", "422"} <= set(responses), path
    assert "429" in openapi["paths"]["/train"]["post"]["responses"]
    bounds = TrainRequest.model_json_schema()["properties"]
    for name in ("episodes", "max_episode_steps", "hidden_size", "batch_size", "replay_size"):
        assert "maximum" in bounds[name]["anyOf"][0], name
    assert "TRAIN_MAX_EPISODES" in (TrainRequest.__doc__ or "")
