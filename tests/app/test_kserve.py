"""KServe V1 and Open Inference Protocol V2 routes, with requests shaped as those protocols document them.

The bodies follow the KServe data-plane docs (V1: `{"instances": [...]}`; V2: the `"id": "42"` inference request
of the Open Inference Protocol spec) and Triton's binary tensor data extension, adapted to Pendulum's
observation (3 numbers) and action (1 number). Every answer is checked against POST /act on the same input.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import Api, ApiFactory
from tests.app.factories import make_policy_bytes

OBSERVATIONS = [[1.0, 0.0, 0.0], [0.5, -0.8660254, 1.5]]


def act(api: Api, observations: list[list[float]], policy_id: int | None = None) -> list[list[float]]:
    body: dict[str, object] = {"observations": observations}
    if policy_id is not None:
        body["policy_id"] = policy_id
    response = api.client.post("/act", json=body)
    assert response.status_code == 200, response.text
    actions: list[list[float]] = response.json()["actions"]
    return actions


def assert_protocol_error(response: object, status: int) -> str:
    """KServe V1 and V2 errors are `{"error": "<message>"}`."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    message: str = body["error"]
    return message


@pytest.fixture
def empty_database_url(tmp_path: Path) -> str:
    """SQLite only: these protocols are views of /act's serving state, the same whichever database holds it
    (the store's side of serving runs on both in tests/app/test_models_api.py and tests/store/)."""
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def served(api: Api) -> tuple[Api, int, int]:
    """An app with a default policy and a second, non-default one."""
    default_id = api.add_policy(make_policy_bytes(1), promote="always")
    other_id = api.add_policy(make_policy_bytes(2))
    return api, default_id, other_id


# ---- KServe V1 ---------------------------------------------------------------------------------------------


def test_v1_predict_default_and_by_policy_id(served: tuple[Api, int, int]) -> None:
    api, _, other_id = served
    response = api.client.post("/v1/models/default:predict", json={"instances": OBSERVATIONS})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"predictions"}
    np.testing.assert_allclose(response.json()["predictions"], act(api, OBSERVATIONS), rtol=1e-6)

    by_id = api.client.post(f"/v1/models/{other_id}:predict", json={"instances": OBSERVATIONS}).json()
    np.testing.assert_allclose(by_id["predictions"], act(api, OBSERVATIONS, other_id), rtol=1e-6)
    assert not np.allclose(by_id["predictions"], response.json()["predictions"])


def test_v1_model_ready_and_list(served: tuple[Api, int, int]) -> None:
    api, _, other_id = served
    assert api.client.get("/v1/models/default").json() == {"name": "default", "ready": True}
    assert api.client.get(f"/v1/models/{other_id}").json() == {"name": str(other_id), "ready": True}
    assert api.client.get("/v1/models").json() == {"models": ["default"]}
    assert "not found" in assert_protocol_error(api.client.get("/v1/models/999"), 404)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": OBSERVATIONS}, "instances"),
        ({"instances": [[1.0, 0.0]]}, "shape [n, 3]"),
        ({"instances": [1.0, 0.0, 0.0]}, "shape [n, 3]"),
        ({"instances": [[1.0, 0.0, "x"]]}, "instances[0][2] must be a number"),
        ({"instances": [[1.0, 0.0, True]]}, "instances[0][2] must be a number"),
        ({"instances": [[1.0, 0.0], [1.0, 0.0, 0.0]]}, "ragged"),
        ({"instances": []}, "shape [n, 3]"),
    ],
)
def test_v1_bad_requests_are_400_in_the_protocol_shape(
    served: tuple[Api, int, int], body: dict[str, object], fragment: str
) -> None:
    api, _, _ = served
    message = assert_protocol_error(api.client.post("/v1/models/default:predict", json=body), 400)
    assert fragment in message


def test_v1_not_json_unknown_model_and_no_policy(make_api: ApiFactory) -> None:
    api = make_api()
    message = assert_protocol_error(
        api.client.post("/v1/models/default:predict", json={"instances": OBSERVATIONS}), 503
    )
    assert "no policy" in message
    assert_protocol_error(api.client.get("/v1/models/default"), 503)
    assert api.client.get("/v1/models").json() == {"models": []}
    api.add_policy(make_policy_bytes(1), promote="always")
    assert_protocol_error(
        api.client.post(
            "/v1/models/default:predict", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        400,
    )
    for name in ("77", "mymodel", "0", "99999999999"):
        assert_protocol_error(api.client.post(f"/v1/models/{name}:predict", json={"instances": OBSERVATIONS}), 404)


def test_inference_needs_the_act_key_when_one_is_set(make_api: ApiFactory) -> None:
    api = make_api(act_api_key="act-key")
    api.add_policy(make_policy_bytes(1), promote="always")
    v2_body = {"inputs": [{"name": "observation", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 0.0, 0.0]}]}
    for path, body in [
        ("/v1/models/default:predict", {"instances": [[1.0, 0.0, 0.0]]}),
        ("/v2/models/default/infer", v2_body),
    ]:
        response = api.client.post(path, json=body)
        assert_protocol_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert api.client.post(path, json=body, headers={"Authorization": "Bearer act-key"}).status_code == 200


# ---- Open Inference Protocol V2 ---------------------------------------------------------------------------


def test_v2_health_and_server_metadata(make_api: ApiFactory) -> None:
    api = make_api()
    assert api.client.get("/v2/health/live").json() == {"live": True}
    not_ready = api.client.get("/v2/health/ready")
    assert not_ready.status_code == 400 and not_ready.json() == {"ready": False}  # "4xx indicates false"
    not_ready_model = api.client.get("/v2/models/default/ready")
    assert not_ready_model.status_code == 400 and not_ready_model.json() == {"name": "default", "ready": False}
    api.add_policy(make_policy_bytes(1), promote="always")
    ready = api.client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    metadata = api.client.get("/v2").json()
    assert metadata["name"] == "ddpg-policy-service" and isinstance(metadata["version"], str)
    assert isinstance(metadata["extensions"], list)


def test_v2_model_metadata_and_ready(served: tuple[Api, int, int]) -> None:
    api, default_id, other_id = served
    metadata = api.client.get("/v2/models/default").json()
    assert metadata == {
        "name": "default",
        "versions": [str(default_id)],
        "platform": "numpy",
        "inputs": [{"name": "observation", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "action", "datatype": "FP32", "shape": [-1, 1]}],
    }
    assert api.client.get(f"/v2/models/{other_id}").json()["versions"] == [str(other_id)]
    assert api.client.get(f"/v2/models/default/versions/{default_id}").json() == metadata
    assert api.client.get("/v2/models/default/ready").json() == {"name": "default", "ready": True}
    assert api.client.get(f"/v2/models/{other_id}/versions/{other_id}/ready").json()["ready"] is True
    assert_protocol_error(api.client.get("/v2/models/mymodel"), 404)
    assert_protocol_error(api.client.get("/v2/models/999/ready"), 404)
    assert_protocol_error(api.client.get(f"/v2/models/default/versions/{other_id}"), 404)


def test_v2_infer_as_the_spec_example(served: tuple[Api, int, int]) -> None:
    """The spec's example request (`"id": "42"`, flat row-major data, one requested output), for this model."""
    api, default_id, _ = served
    request = {
        "id": "42",
        "inputs": [
            {
                "name": "observation",
                "shape": [2, 3],
                "datatype": "FP32",
                "data": [1.0, 0.0, 0.0, 0.5, -0.8660254, 1.5],
            }
        ],
        "outputs": [{"name": "action"}],
    }
    response = api.client.post("/v2/models/default/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "42" and body["model_name"] == "default" and body["model_version"] == str(default_id)
    [output] = body["outputs"]
    assert output["name"] == "action" and output["datatype"] == "FP32" and output["shape"] == [2, 1]
    np.testing.assert_allclose(output["data"], np.ravel(act(api, OBSERVATIONS)), rtol=1e-6)


def test_v2_infer_nested_data_versions_and_no_outputs_field(served: tuple[Api, int, int]) -> None:
    api, _, other_id = served
    request = {"inputs": [{"name": "observation", "shape": [2, 3], "datatype": "FP32", "data": OBSERVATIONS}]}
    for path in (f"/v2/models/{other_id}/infer", f"/v2/models/{other_id}/versions/{other_id}/infer"):
        body = api.client.post(path, json=request).json()
        assert "id" not in body and body["model_version"] == str(other_id)
        np.testing.assert_allclose(body["outputs"][0]["data"], np.ravel(act(api, OBSERVATIONS, other_id)), rtol=1e-6)
    assert_protocol_error(api.client.post(f"/v2/models/{other_id}/versions/1/infer", json=request), 404)


def test_v2_infer_binary_tensor_data(served: tuple[Api, int, int]) -> None:
    """Triton's binary extension: JSON header of Inference-Header-Content-Length bytes, then raw FP32."""
    api, _, _ = served
    header = json.dumps(
        {
            "inputs": [
                {"name": "observation", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}
            ],
            "outputs": [{"name": "action", "parameters": {"binary_data": True}}],
        }
    ).encode()
    raw = np.asarray(OBSERVATIONS, dtype="<f4").tobytes()
    response = api.client.post(
        "/v2/models/default/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:json_length])
    [output] = answer["outputs"]
    assert output["shape"] == [2, 1] and output["parameters"] == {"binary_data_size": 8} and "data" not in output
    actions = struct.unpack("<2f", response.content[json_length:])
    np.testing.assert_allclose(actions, np.ravel(act(api, OBSERVATIONS)), rtol=1e-6)

    # A binary request may ask for a JSON answer (binary_data false is the JSON default).
    header = json.dumps(
        {
            "inputs": [
                {"name": "observation", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}
            ],
            "outputs": [{"name": "action", "parameters": {"binary_data": False}}],
        }
    ).encode()
    response = api.client.post(
        "/v2/models/default/infer", content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], actions, rtol=1e-6)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "input0", "shape": [1, 3], "datatype": "FP32", "data": [1, 0, 0]}, "'observation'"),
        ({"name": "observation", "shape": [1, 3], "datatype": "UINT32", "data": [1, 0, 0]}, "FP32"),
        ({"name": "observation", "shape": [3], "datatype": "FP32", "data": [1, 0, 0]}, "shape [n, 3]"),
        ({"name": "observation", "shape": [1, 2], "datatype": "FP32", "data": [1, 0]}, "shape [n, 3]"),
        ({"name": "observation", "shape": [2, 3], "datatype": "FP32", "data": [1, 0, 0]}, "needs 6"),
        (
            {"name": "observation", "shape": [1, 3], "datatype": "FP32", "data": [1, 0, None]},
            "data[2] must be a number",
        ),
        ({"name": "observation", "shape": [1, 3], "datatype": "FP32", "data": [1, 0, 1e39]}, "FP32 range"),
        ({"name": "observation", "shape": [1, 3], "datatype": "FP32"}, "no `data`"),
        ({"name": "observation", "shape": [0, 3], "datatype": "FP32", "data": []}, "between 1 and"),
    ],
)
def test_v2_bad_tensors_are_400_in_the_protocol_shape(
    served: tuple[Api, int, int], tensor: dict[str, object], fragment: str
) -> None:
    api, _, _ = served
    message = assert_protocol_error(api.client.post("/v2/models/default/infer", json={"inputs": [tensor]}), 400)
    assert fragment in message


def test_v2_bad_requests(served: tuple[Api, int, int]) -> None:
    api, _, _ = served
    good = {"name": "observation", "shape": [1, 3], "datatype": "FP32", "data": [1, 0, 0]}
    assert_protocol_error(api.client.post("/v2/models/default/infer", json={"inputs": [good, good]}), 400)
    assert "output" in assert_protocol_error(
        api.client.post("/v2/models/default/infer", json={"inputs": [good], "outputs": [{"name": "output0"}]}), 400
    )
    assert_protocol_error(api.client.post("/v2/models/default/infer", json={"inputs": [good], "id": 42}), 400)
    assert_protocol_error(
        api.client.post("/v2/models/default/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"}),
        400,
    )
    assert_protocol_error(api.client.post("/v2/models/nope/infer", json={"inputs": [good]}), 404)


def test_batch_limit_applies(make_api: ApiFactory) -> None:
    api = make_api(max_batch=2)
    api.add_policy(make_policy_bytes(1), promote="always")
    three = [[1.0, 0.0, 0.0]] * 3
    assert "between 1 and 2" in assert_protocol_error(
        api.client.post("/v1/models/default:predict", json={"instances": three}), 400
    )


def v2_request(data: object, shape: list[int]) -> dict[str, object]:
    return {"inputs": [{"name": "observation", "shape": shape, "datatype": "FP32", "data": data}]}


@pytest.mark.parametrize(
    "row",
    [[1.0, 0.0, "x"], [1.0, 0.0, True], [1.0, 0.0, None], [1.0, 0.0, 1e39], [1.0, 0.0], [1.0, [0.0], 0.0], 5.0],
)
def test_observations_are_checked_as_act_checks_them(served: tuple[Api, int, int], row: object) -> None:
    """One set of checks: /act's 422 and the protocols' 400 name the same element with the same words."""
    api, _, _ = served
    observations = [[1.0, 0.0, 0.0], row]
    rejected = api.client.post("/act", json={"observations": observations})
    assert rejected.status_code == 422
    [detail] = rejected.json()["error"]["details"]
    act_says = f"{detail['field']} {detail['message']}"
    v1 = assert_protocol_error(api.client.post("/v1/models/default:predict", json={"instances": observations}), 400)
    assert v1 == act_says.replace("observations", "instances")
    v2 = assert_protocol_error(api.client.post("/v2/models/default/infer", json=v2_request(observations, [2, 3])), 400)
    assert v2 == act_says.replace("observations", "observation.data")


def test_the_batch_limit_reads_as_on_act(make_api: ApiFactory) -> None:
    api = make_api(max_batch=2)
    api.add_policy(make_policy_bytes(1), promote="always")
    three = [[1.0, 0.0, 0.0]] * 3
    act_says = api.client.post("/act", json={"observations": three}).json()["error"]["details"][0]["message"]
    assert act_says == "must hold between 1 and 2 observations per request, got 3 (at most 2)"
    v1 = assert_protocol_error(api.client.post("/v1/models/default:predict", json={"instances": three}), 400)
    assert v1 == f"instances {act_says}"
    v2 = assert_protocol_error(api.client.post("/v2/models/default/infer", json=v2_request(three, [3, 3])), 400)
    assert v2 == f"input 'observation' {act_says}"


def test_v2_json_data_with_true_or_false_elsewhere_in_the_request(served: tuple[Api, int, int]) -> None:
    """Booleans are looked for only when the body has them; a flag elsewhere must not reject good numbers."""
    api, _, _ = served
    request = v2_request(OBSERVATIONS, [2, 3]) | {"outputs": [{"name": "action", "parameters": {"binary_data": False}}]}
    response = api.client.post("/v2/models/default/infer", json=request)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], np.ravel(act(api, OBSERVATIONS)), rtol=1e-6)


def test_v2_binary_input_names_a_nan(served: tuple[Api, int, int]) -> None:
    api, _, _ = served
    tensor = {"name": "observation", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}
    header = json.dumps({"inputs": [tensor]}).encode()
    raw = np.asarray([[1.0, 0.0, 0.0], [0.0, np.nan, 0.0]], dtype="<f4").tobytes()
    response = api.client.post(
        "/v2/models/default/infer", content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert assert_protocol_error(response, 400).startswith("observation[1][1] must be a finite number")


def test_routes_are_documented(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/models/{name}:predict",
        "/v1/models/{name}",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
    ):
        assert path in paths, path
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["example"]["id"] == "42"
    assert infer["responses"]["400"]["content"]["application/json"]["schema"]["required"] == ["error"]
