"""WS /act/stream: one connection is one session; each message an /act body, each answer the /act answer."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest
from starlette.websockets import WebSocketDisconnect

from models.policy import NumpyActor
from tests.app.conftest import Api, ApiFactory
from tests.app.factories import make_policy_bytes
from tests.conftest import sqlite_only

# SQLite only: the stream answers from the process's policy cache, the same whichever database fills it.
pytestmark = sqlite_only

OBS = [0.3, -0.2, 0.5]


def test_each_message_is_answered_like_act(api: Api) -> None:
    weights = make_policy_bytes(1)
    policy_id = api.add_policy(weights, promote="always")
    with api.client.websocket_connect("/act/stream") as ws:
        for step in range(3):
            ws.send_text(orjson.dumps({"observation": OBS, "reward": None if step == 0 else -1.0}).decode())
            answer = orjson.loads(ws.receive_text())
            assert answer["policy_id"] == policy_id
            np.testing.assert_allclose(answer["action"], NumpyActor.from_bytes(weights).act(np.array(OBS)), rtol=1e-6)
        # A bad message gets the error body; the stream goes on.
        for bad, field in [
            ({"observation": [0, 0]}, "observation"),
            ({"observation": OBS, "session": "mine"}, "session"),
            ({"observation": OBS, "model": "pendulum"}, "model"),
            ({"observations": [OBS]}, "observations"),
            ({"observation": OBS, "reward": "high"}, "reward"),
            ({"observation": OBS, "reward": -3.4e38}, "reward"),  # outside Pendulum's declared range
            ({"observation": OBS, "reward": 0.5}, "reward"),
        ]:
            ws.send_text(orjson.dumps(bad).decode())
            error = orjson.loads(ws.receive_text())["error"]
            assert error["details"][0]["field"] == field, error
        ws.send_bytes(b"not json")
        assert orjson.loads(ws.receive_text())["error"]["details"][0]["field"] == "body"
        ws.send_text(orjson.dumps({"observation": OBS, "reward": -2.0, "done": True}).decode())
        assert orjson.loads(ws.receive_text())["policy_id"] == policy_id
    metrics = api.client.get("/metrics").text
    assert f'act_episodes_finished_total{{model="pendulum",policy_id="{policy_id}"}} 1.0' in metrics


def test_a_connection_keeps_its_policy_through_a_promotion(api: Api) -> None:
    first = api.add_policy(make_policy_bytes(1), promote="always")
    api.client.post("/models", json={"name": "car", "env_id": "MountainCarContinuous-v0"})
    second = api.add_policy(make_policy_bytes(2))
    with api.client.websocket_connect("/act/stream?model=pendulum") as ws:
        ws.send_text(orjson.dumps({"observation": OBS}).decode())
        assert orjson.loads(ws.receive_text())["policy_id"] == first
        assert api.client.post(f"/policies/{second}/promote").status_code == 200
        for _ in range(3):
            ws.send_text(orjson.dumps({"observation": OBS, "reward": -1.0}).decode())
            assert orjson.loads(ws.receive_text())["policy_id"] == first
        ws.send_text(orjson.dumps({"observation": OBS, "reward": -1.0, "done": True}).decode())
        assert orjson.loads(ws.receive_text())["policy_id"] == first
        # The next episode starts under the new champion.
        ws.send_text(orjson.dumps({"observation": OBS}).decode())
        assert orjson.loads(ws.receive_text())["policy_id"] == second


def test_an_unknown_model_is_refused(api: Api) -> None:
    api.add_policy(make_policy_bytes(1), promote="always")
    with api.client.websocket_connect("/act/stream?model=boat") as ws:
        error = orjson.loads(ws.receive_text())["error"]
        assert error["code"] == "not_found" and error["details"][0]["field"] == "model"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008


def test_an_invalid_model_is_refused_with_its_error_body(api: Api) -> None:
    with api.client.websocket_connect(f"/act/stream?model={'m' * 65}") as ws:
        error = orjson.loads(ws.receive_text())["error"]
        assert error["code"] == "validation_error" and error["details"][0]["field"] == "model"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008


def test_the_stream_needs_the_act_key_when_set(make_api: ApiFactory) -> None:
    api = make_api(act_api_key="act-key")
    api.add_policy(make_policy_bytes(1), promote="always")
    # Accepted, told why, then closed with 1008 (a close before accepting would reach a client as HTTP 403).
    with api.client.websocket_connect("/act/stream") as refused:
        assert orjson.loads(refused.receive_text())["error"]["code"] == "unauthorized"
        with pytest.raises(WebSocketDisconnect) as closed:
            refused.receive_text()
        assert closed.value.code == 1008
    headers = {"Authorization": "Bearer act-key"}
    with api.client.websocket_connect("/act/stream", headers=headers) as ws:
        ws.send_text(orjson.dumps({"observation": OBS}).decode())
        assert "action" in orjson.loads(ws.receive_text())


def test_a_plain_get_documents_the_stream(api: Api) -> None:
    response = api.client.get("/act/stream", params={"model": "car"})
    assert response.status_code == 200 and response.json()["websocket"] == "/act/stream?model=car"
    assert "One connection is one session" in response.json()["description"]
    operation = api.client.get("/openapi.json").json()["paths"]["/act/stream"]["get"]
    assert "One connection is one session" in operation["description"]
    assert "message" in operation["x-websocket-messages"]


# ---- binary frames: ?encoding=msgpack -----------------------------------------------------------------------


def msgpack_answer(ws: object) -> dict[str, object]:
    """The next answer, which must be a binary frame holding a msgpack map."""
    message = ws.receive()  # type: ignore[attr-defined]
    assert message.get("bytes") is not None and message.get("text") is None, message
    answer: dict[str, object] = msgpack.unpackb(message["bytes"])
    return answer


def test_msgpack_frames_answer_as_json_frames_do(api: Api) -> None:
    policy_id = api.add_policy(make_policy_bytes(1), promote="always")
    steps: list[dict[str, object]] = [
        {"observation": OBS},
        {"observation": [1.0, 0.0, -3.0], "reward": -1.0},
        {"observation": [0.0, 0.0]},  # an error: the stream goes on
        {"observation": OBS, "reward": "high"},
        {"observation": OBS, "session": "mine"},
        {"observations": [OBS]},
        {"observation": [0.1, True, 0.3], "reward": -1.0},
        {"observation": OBS, "reward": -2.0, "done": True},
        {"observation": OBS},
    ]
    with (
        api.client.websocket_connect("/act/stream") as json_ws,
        api.client.websocket_connect("/act/stream?encoding=msgpack") as binary_ws,
    ):
        for step in steps:
            json_ws.send_text(orjson.dumps(step).decode())
            binary_ws.send_bytes(msgpack.packb(step))
            expected = orjson.loads(json_ws.receive_text())
            assert msgpack_answer(binary_ws) == expected, step
        assert expected["policy_id"] == policy_id
    metrics = api.client.get("/metrics").text
    assert f'act_episodes_finished_total{{model="pendulum",policy_id="{policy_id}"}} 2.0' in metrics


def test_msgpack_values_json_cannot_carry_are_refused_naming_the_field(api: Api) -> None:
    api.add_policy(make_policy_bytes(1), promote="always")
    with api.client.websocket_connect("/act/stream?model=pendulum&encoding=msgpack") as ws:
        for message, field in [
            (msgpack.packb({"observation": [0.1, float("nan"), 0.3]}), "observation[1]"),
            (msgpack.packb({"observation": [0.1, float("inf"), 0.3]}), "observation[1]"),
            (msgpack.packb({"observation": [0.1, b"\x00", 0.3]}), "observation[1]"),
            (msgpack.packb({"observation": OBS, "reward": float("nan")}), "reward"),
            (msgpack.packb({b"observation": OBS}), "body"),
            (msgpack.packb({1: OBS}, strict_types=False), "body"),
            (msgpack.packb([OBS]), "body"),
            (b"\xc1", "body"),  # never used in msgpack
            (msgpack.packb({"observation": OBS}) + b"\x00", "body"),  # trailing bytes
            (b"", "body"),
        ]:
            ws.send_bytes(message)
            error = msgpack_answer(ws)["error"]
            assert isinstance(error, dict) and error["code"] == "validation_error", error
            assert error["details"][0]["field"] == field, (message, error)
        ws.send_bytes(msgpack.packb({"observation": OBS}))
        assert "action" in msgpack_answer(ws)


def test_msgpack_refusals_are_in_msgpack(make_api: ApiFactory) -> None:
    api = make_api(act_api_key="act-key")
    api.add_policy(make_policy_bytes(1), promote="always")
    with api.client.websocket_connect("/act/stream?encoding=msgpack") as refused:
        assert msgpack_answer(refused)["error"]["code"] == "unauthorized"  # type: ignore[index]
        with pytest.raises(WebSocketDisconnect) as closed:
            refused.receive_bytes()
        assert closed.value.code == 1008
    headers = {"Authorization": "Bearer act-key"}
    with api.client.websocket_connect("/act/stream?model=boat&encoding=msgpack", headers=headers) as unknown:
        assert msgpack_answer(unknown)["error"]["code"] == "not_found"  # type: ignore[index]
    # An invalid encoding cannot answer in itself: the refusal is JSON, naming the parameter.
    with api.client.websocket_connect("/act/stream?encoding=xml", headers=headers) as invalid:
        error = orjson.loads(invalid.receive_text())["error"]
        assert error["code"] == "validation_error" and error["details"][0]["field"] == "encoding"


def test_the_stream_page_documents_the_encodings(api: Api) -> None:
    response = api.client.get("/act/stream", params={"model": "car", "encoding": "msgpack"})
    assert response.json()["websocket"] == "/act/stream?model=car&encoding=msgpack"
    assert "?encoding=msgpack" in response.json()["description"]
    assert api.client.get("/act/stream", params={"encoding": "xml"}).status_code == 422
