"""GET /policies/{id}/actor.onnx: a checked ONNX model that answers as /act does, never one of altered bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
from sqlalchemy import update

from models.onnx_export import read_onnx_metadata
from models.random_actor import random_policy_weights
from models.weights import encode_policy
from store.tables.registry import Policy
from tests.app.conftest import Api
from tests.app.factories import assert_error_shape, make_policy_bytes


def _run(model: bytes, observations: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (action,) = session.run(["action"], {"observation": observations})
    return np.asarray(action)


def _store_weights(api: Api, policy_id: int, weights: bytes) -> None:
    """Overwrite a policy's stored bytes behind the registry's back (as a corrupted disk or a bad restore would)."""
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        session.execute(update(Policy).where(Policy.id == policy_id).values(weights=weights))
        session.commit()


def test_the_onnx_model_answers_as_act_does(api: Api) -> None:
    weights = make_policy_bytes(5)
    policy_id = api.add_policy(weights, promote="always")
    response = api.client.get(f"/policies/{policy_id}/actor.onnx")
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    onnx.checker.check_model(onnx.load_from_string(response.content), full_check=True)
    rng = np.random.default_rng(1)
    observations = rng.uniform([-1.0, -1.0, -8.0], [1.0, 1.0, 8.0], size=(1000, 3)).astype(np.float32)
    served = api.client.post("/act", json={"observations": observations.tolist(), "policy_id": policy_id}).json()
    np.testing.assert_allclose(_run(response.content, observations), np.asarray(served["actions"]), atol=1e-5)
    metadata = read_onnx_metadata(response.content)
    assert metadata["source_sha256"] == hashlib.sha256(weights).hexdigest()
    assert metadata["env_id"] == "Pendulum-v1" and metadata["action_high"] == [2.0]


def test_the_model_is_cached_and_revalidated_by_etag(api: Api) -> None:
    policy_id = api.add_policy(make_policy_bytes(6))
    first = api.client.get(f"/policies/{policy_id}/actor.onnx")
    again = api.client.get(f"/policies/{policy_id}/actor.onnx", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert api.client.get(f"/policies/{policy_id}/actor.onnx").content == first.content


def test_altered_or_truncated_weights_are_never_served(api: Api) -> None:
    weights = make_policy_bytes(7)
    policy_id = api.add_policy(weights)
    api.client.get(f"/policies/{policy_id}/actor.onnx")  # cached now: the cache must not hide what follows
    tampered = bytearray(weights)
    tampered[-4] ^= 0xFF  # one weight's bits flipped: still a loadable file, not the registered one
    for stored in (bytes(tampered), weights[: len(weights) // 2]):
        _store_weights(api, policy_id, stored)
        response = api.client.get(f"/policies/{policy_id}/actor.onnx")
        assert response.status_code == 409, response.text
        assert_error_shape(response.json(), "policy_corrupt")


def test_unknown_policy_is_404_and_a_bad_id_422(api: Api) -> None:
    assert api.client.get("/policies/99/actor.onnx").status_code == 404
    assert api.client.get("/policies/0/actor.onnx").status_code == 422


def test_a_normalized_general_policy_exports_what_act_answers(api: Api) -> None:
    data = encode_policy(
        random_policy_weights(8, sizes=(3, 32, 32, 1), activations=["elu", "tanh"], normalized=True, origin="cleanrl")
    )
    policy_id = api.add_policy(data)
    response = api.client.get(f"/policies/{policy_id}/actor.onnx")
    assert response.status_code == 200
    observations = np.random.default_rng(2).normal(scale=40.0, size=(500, 3)).astype(np.float32)
    served = api.client.post("/act", json={"observations": observations.tolist(), "policy_id": policy_id}).json()
    np.testing.assert_allclose(_run(response.content, observations), np.asarray(served["actions"]), atol=1e-5)
    metadata = read_onnx_metadata(response.content)
    assert metadata["origin"] == "cleanrl" and metadata["format"] == "policy-mlp/1"
