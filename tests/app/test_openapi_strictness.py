"""The OpenAPI document is as strict as the code: security only where a key is set and checked, request schemas
that refuse what the code refuses (and nothing it takes), every allowed method in a 405's `Allow`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth

from tests.app.conftest import Api, ApiFactory
from tests.app.factories import make_policy_bytes

KEYED = {("post", "/train"), ("post", "/models"), ("put", "/models/{name}/rollout"), ("post", "/sweeps")}
ACT_KEYED = {
    ("post", "/act"),
    ("post", "/v1/models/{name}:predict"),
    ("post", "/v2/models/{name}/infer"),
    ("post", "/v2/models/{name}/versions/{version}/infer"),
}


@pytest.fixture
def empty_database_url(tmp_path: Path) -> str:
    """SQLite only: what this module checks is the document and the request validation in front of the store,
    the same whichever database is behind it (tests/app/test_models_api.py and others run both)."""
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


def _secured(spec: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, list[str]]]]:
    return {
        (method, path): operation["security"]
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if "security" in operation
    }


_open_documents: list[dict[str, Any]] = []


def _open_document(api: Api) -> dict[str, Any]:
    """/openapi.json of a server without keys, as the first such server of this module served it. Every `api` here
    has the same settings and routes, so the same document; generating it takes FastAPI a fifth of a second."""
    if not _open_documents:
        _open_documents.append(api.client.get("/openapi.json").json())
    return _open_documents[0]


def test_no_key_no_security_declared(api: Api) -> None:
    spec = _open_document(api)
    assert _secured(spec) == {}
    assert "securitySchemes" not in spec.get("components", {})


@pytest.mark.parametrize(
    ("keys", "schemes"),
    [
        ({"api_key": "k"}, {"ApiKey"}),
        ({"act_api_key": "a"}, {"ActApiKey"}),
        ({"api_key": "k", "act_api_key": "a"}, {"ApiKey", "ActApiKey"}),
    ],
)
def test_each_key_is_declared_on_the_operations_that_check_it(
    make_api: ApiFactory, keys: dict[str, str], schemes: set[str]
) -> None:
    spec = make_api(**keys).client.get("/openapi.json").json()
    secured = _secured(spec)
    assert set(spec["components"]["securitySchemes"]) == schemes
    by_scheme = {scheme: {op for op, security in secured.items() if security == [{scheme: []}]} for scheme in schemes}
    assert set().union(*by_scheme.values()) == set(secured)  # one scheme per secured operation
    if "ApiKey" in schemes:
        assert by_scheme["ApiKey"] >= KEYED
        # Every write that checks API_KEY, no read.
        assert all(method != "get" for method, _ in by_scheme["ApiKey"])
        assert ("post", "/jobs/{job_id}/cancel") in by_scheme["ApiKey"]
    if "ActApiKey" in schemes:
        assert by_scheme["ActApiKey"] == ACT_KEYED


def test_an_open_write_passes_the_ignored_auth_check(api: Api) -> None:
    """What schemathesis reported as ST401 while every write declared the scheme on a server without a key."""
    spec = copy.deepcopy(_open_document(api))
    schema = schemathesis.openapi.from_dict(copy.deepcopy(spec))
    schema.app = api.client.app
    case = schema["/models"]["POST"].Case(body={"name": "car", "env_id": "MountainCarContinuous-v0"})
    assert case.call_and_validate(checks=[ignored_auth]).status_code == 201
    # The same write, the document declaring the scheme as before: the check fails it.
    spec["paths"]["/models"]["post"]["security"] = [{"ApiKey": []}]
    spec["components"]["securitySchemes"] = {"ApiKey": {"type": "http", "scheme": "bearer"}}
    declared = schemathesis.openapi.from_dict(spec)
    declared.app = api.client.app
    case = declared["/models"]["POST"].Case(body={"name": "boat", "env_id": "MountainCarContinuous-v0"})
    with pytest.raises(FailureGroup) as raised:
        case.call_and_validate(checks=[ignored_auth], headers={"Authorization": "Bearer any"})
    assert [failure.code for failure in raised.value.exceptions] == ["ST401"]


def _body_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    schema = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    # Resolve `$ref`s against the whole document (the sweep's dimensions are a component).
    return {**schema, "components": spec.get("components", {})}


def _assert_agree(api: Api, method: str, path: str, body: Any, *, valid: bool, documented: str | None = None) -> None:
    """The document (at path `documented`, if not `path`) and the server give the same verdict on `body` (the
    server: a 400 or 422, or not)."""
    spec = _open_document(api)
    validator = jsonschema.Draft202012Validator(_body_schema(spec, method, documented or path))
    assert validator.is_valid(body) is valid, body
    status = api.client.request(method, path, json=body).status_code
    assert (status in (400, 422)) is not valid, (body, status)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"observation": [0.1, 0.2, 0.3]}, True),
        ({"observations": [[0.1, 0.2, 0.3]], "observation": None}, True),
        ({"observation": [0.1, 0.2, 0.3], "observations": [[0.1, 0.2, 0.3]]}, False),
        ({}, False),
        ({"observation": None}, False),
        ({"observation": []}, False),
        ({"observations": []}, False),
        ({"observations": [[]]}, False),
        ({"observation": [1e39, 0.0, 0.0]}, False),
        ({"observation": [0.1, 0.2, 0.3], "model": ""}, False),
    ],
)
def test_the_act_body(api: Api, body: Any, valid: bool) -> None:
    api.add_policy(make_policy_bytes(1), promote="always")
    _assert_agree(api, "post", "/act", body, valid=valid)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/{name}:predict", {"instances": []}),
        ("/v1/models/{name}:predict", {"instances": [[]]}),
        ("/v2/models/{name}/infer", {"inputs": []}),
        (
            "/v2/models/{name}/infer",
            {"inputs": [{"name": "observation", "datatype": "FP32", "shape": [1], "data": []}]},
        ),
    ],
)
def test_inference_bodies_refused_by_the_schema(api: Api, path: str, body: Any) -> None:
    api.add_policy(make_policy_bytes(1), promote="always")
    _assert_agree(api, "post", path.format(name="default"), body, valid=False, documented=path)


SPACE = {"seed": {"choice": [1, 2]}}


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"space": SPACE}, True),
        ({"space": {"seed": {"choice": [1, 2], "uniform": None}}}, True),
        ({"space": {"": {}}}, False),
        ({"space": {"seed": {}}}, False),
        ({"space": {"seed": {"choice": [1], "randint": [1, 2]}}}, False),
        ({"space": {"env_id": {"choice": ["Pendulum-v1"]}}}, False),
        ({"space": SPACE, "model": "default"}, False),
    ],
)
def test_the_sweep_body(api: Api, body: Any, valid: bool) -> None:
    _assert_agree(api, "post", "/sweeps", body, valid=valid)


def test_a_sweep_for_the_reserved_model_name_names_model(api: Api) -> None:
    response = api.client.post("/sweeps", json={"space": SPACE, "model": "default"})
    assert response.status_code == 422
    assert [detail["field"] for detail in response.json()["error"]["details"]] == ["model"]


@pytest.mark.parametrize(
    "body",
    [
        {"challenger": 2, "mode": "canary", "percent": "50"},
        {"challenger": 2, "mode": "canary", "percent": True},
        {"challenger": "2", "mode": "canary", "percent": 50},
        {"challenger": 2, "mode": "canary", "percent": 50, "guard": {"min_episodes": "3"}},
    ],
)
def test_rollout_bodies_are_strict_like_alias_bodies(api: Api, body: dict[str, Any]) -> None:
    api.client.post("/models", json={"name": "car", "env_id": "MountainCarContinuous-v0"})
    response = api.client.put("/models/car/rollout", json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/models/pendulum/rollout", "DELETE, GET, PUT"),
        ("PATCH", "/models/pendulum/aliases/stable", "DELETE, PUT"),
        ("DELETE", "/models", "GET, POST"),
        ("GET", "/act", "POST"),
    ],
)
def test_a_405_allows_every_method_of_its_path(api: Api, method: str, path: str, allowed: str) -> None:
    response = api.client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    for other in allowed.split(", "):
        assert api.client.request(other, path).status_code != 405, other
