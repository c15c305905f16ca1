"""The ONNX export computes the served action (NumpyActor.act) in onnxruntime, and carries the metadata."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.onnx_export import (
    INPUT_NAME,
    OPSET_VERSION,
    OUTPUT_NAME,
    OnnxMetadataError,
    actor_onnx_bytes,
    read_onnx_metadata,
    safetensors_to_onnx,
)
from models.policy import NumpyActor
from models.policy_types import ObsNormalization
from models.policy_validation import build_policy_weights
from models.random_actor import random_actor_bytes, random_policy_weights
from models.weights import WeightsFormatError, decode_actor, encode_actor, encode_policy

REPO = Path(__file__).resolve().parents[2]
N_OBSERVATIONS = 1000


def pendulum_observations(seed: int, n: int = N_OBSERVATIONS) -> np.ndarray:
    """Observations within Pendulum's observation bounds: cos and sin of one angle, and thetadot in [-8, 8]."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8.0, 8.0, n)], axis=1).astype(np.float32)


def run_onnx(model: bytes, observations: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (actions,) = session.run([OUTPUT_NAME], {INPUT_NAME: observations})
    return np.asarray(actions)


@pytest.mark.parametrize(
    ("hidden_size", "weight_scale"),
    [
        # Unit-scale weights on a small net drive the tanh into saturation, so the clip to the bounds matters.
        (8, 1.0),
        # Larger nets with initialiser-scale weights (1/sqrt(fan_in)), as a trained actor has. Unit-scale weights
        # at 256 give pre-activations in the hundreds, where Gemm's and numpy's different summation orders
        # alone differ by ~1e-4: a property of float32, not of the export.
        (64, None),
        (256, None),
    ],
)
def test_onnxruntime_matches_numpy_actor_on_pendulum_observations(hidden_size: int, weight_scale: float | None) -> None:
    data = random_actor_bytes(hidden_size, hidden_size=hidden_size, weight_scale=weight_scale)
    observations = pendulum_observations(hidden_size)

    actions = run_onnx(safetensors_to_onnx(data), observations)

    expected = NumpyActor.from_bytes(data).act(observations)
    assert actions.shape == (N_OBSERVATIONS, 1)
    assert actions.dtype == np.float32
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
    assert np.all((actions >= -2.0) & (actions <= 2.0))


def test_several_action_dimensions_with_their_own_bounds() -> None:
    rng = np.random.default_rng(7)
    obs_dim, hidden, act_dim = 5, 16, 3
    tensors = {
        "linear1.weight": rng.normal(size=(hidden, obs_dim)),
        "linear1.bias": rng.normal(size=hidden),
        "linear2.weight": rng.normal(size=(hidden, hidden)),
        "linear2.bias": rng.normal(size=hidden),
        "linear3.weight": rng.normal(size=(act_dim, hidden)),
        "linear3.bias": rng.normal(size=act_dim),
    }
    low = np.array([-1.0, 0.0, -3.0], dtype=np.float32)
    high = np.array([1.0, 5.0, -2.5], dtype=np.float32)
    data = encode_actor(
        tensors,
        env_id="Test-v0",
        action_low=low,
        action_high=high,
        config={},
        seed=None,
        eval_mean_return=None,
        created_at="2026-01-01T00:00:00+00:00",
    )
    observations = rng.uniform(-3, 3, size=(N_OBSERVATIONS, obs_dim)).astype(np.float32)

    actions = run_onnx(safetensors_to_onnx(data), observations)

    np.testing.assert_allclose(actions, NumpyActor.from_bytes(data).act(observations), rtol=0, atol=1e-5)
    assert actions.shape == (N_OBSERVATIONS, act_dim)
    assert np.all(actions >= low) and np.all(actions <= high)
    # Unit-scale weights saturate the tanh: some actions sit on the bounds, so the clip is exercised.
    assert np.any(np.isclose(actions, low, atol=1e-4) | np.isclose(actions, high, atol=1e-4))


def test_batch_axis_is_dynamic_and_names_are_the_contract() -> None:
    model = onnx.load_from_string(safetensors_to_onnx(random_actor_bytes(3)))
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    input_dims = graph_input.type.tensor_type.shape.dim
    assert input_dims[0].dim_param == "batch" and input_dims[1].dim_value == 3
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph_output.type.tensor_type.shape.dim[1].dim_value == 1
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET_VERSION)]

    data = random_actor_bytes(3)
    for batch in (1, 2, 17):
        observations = pendulum_observations(batch, batch)
        np.testing.assert_allclose(
            run_onnx(safetensors_to_onnx(data), observations),
            NumpyActor.from_bytes(data).act(observations),
            rtol=0,
            atol=1e-5,
        )


def test_model_passes_the_full_onnx_checker() -> None:
    model = onnx.load_from_string(safetensors_to_onnx(random_actor_bytes(4, hidden_size=32)))
    onnx.checker.check_model(model, full_check=True)


def test_metadata_props_round_trip() -> None:
    data = random_actor_bytes(5, eval_mean_return=-151.25, config={"hidden_size": 8, "preset": "default"})
    weights = decode_actor(data)

    metadata = read_onnx_metadata(safetensors_to_onnx(data))

    assert metadata == {**weights.metadata(), "source_sha256": hashlib.sha256(data).hexdigest()}
    assert metadata["eval_mean_return"] == -151.25
    assert metadata["config"] == {"hidden_size": 8, "preset": "default"}


def test_metadata_props_are_the_safetensors_header_strings() -> None:
    data = random_actor_bytes(6, eval_mean_return=-140.5)
    header_length = int.from_bytes(data[:8], "little")
    header_metadata = json.loads(data[8 : 8 + header_length])["__metadata__"]

    model = onnx.load_from_string(safetensors_to_onnx(data))
    props = {p.key: p.value for p in model.metadata_props}

    assert props.pop("source_sha256") == hashlib.sha256(data).hexdigest()
    assert props == header_metadata


def test_export_is_byte_deterministic() -> None:
    data = random_actor_bytes(8, hidden_size=16)
    assert safetensors_to_onnx(data) == safetensors_to_onnx(data)
    assert safetensors_to_onnx(data) != safetensors_to_onnx(random_actor_bytes(9, hidden_size=16))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:4], id="shorter-than-header-size"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b.replace(b"ddpg-actor/1", b"ddpg-actor/9"), id="wrong-format-tag"),
        pytest.param(lambda b: b.replace(b'"obs_dim":"3"', b'"obs_dim":"4"'), id="shape-mismatch"),
        pytest.param(lambda b: b[:8] + b"[" + b[9:], id="header-not-json"),
    ],
)
def test_tampered_weights_raise_the_loaders_error(tamper) -> None:
    data = random_actor_bytes(10)
    tampered = tamper(data)
    assert tampered != data
    with pytest.raises(WeightsFormatError):
        safetensors_to_onnx(tampered)


def test_non_finite_weights_raise_the_loaders_error() -> None:
    data = bytearray(random_actor_bytes(11, hidden_size=4))
    # The last 4 bytes are the final float32 of the last tensor in the file; make it NaN.
    data[-4:] = np.array([np.nan], dtype="<f4").tobytes()
    with pytest.raises(WeightsFormatError, match="non-finite"):
        safetensors_to_onnx(bytes(data))


def test_source_sha256_must_be_a_sha256() -> None:
    weights = decode_actor(random_actor_bytes(12))
    with pytest.raises(ValueError, match="source_sha256"):
        actor_onnx_bytes(weights, source_sha256="not-a-hash")


def test_foreign_onnx_metadata_is_rejected() -> None:
    model = onnx.load_from_string(safetensors_to_onnx(random_actor_bytes(13)))
    del model.metadata_props[:]
    with pytest.raises(OnnxMetadataError, match="lack required keys"):
        read_onnx_metadata(model)


def test_export_module_does_not_import_torch() -> None:
    script = (
        "import sys\n"
        "from models.onnx_export import safetensors_to_onnx\n"
        "from models.random_actor import random_actor_bytes\n"
        "safetensors_to_onnx(random_actor_bytes(0))\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'trainer'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("sizes", "activations", "output", "normalized"),
    [
        ((17, 400, 300, 6), ["relu", "relu"], "tanh_scale", False),  # TD3-like
        ((8, 64, 64, 2), ["tanh", "tanh"], "clip", True),  # PPO-like under VecNormalize
        ((5, 32, 16, 3), ["elu", "leaky_relu"], "tanh_scale", True),
        ((3, 2), [], "clip", False),  # linear
    ],
)
def test_general_policies_export_with_normalization_inside_the_graph(
    sizes: tuple[int, ...], activations: list[str], output: str, normalized: bool
) -> None:
    weights = random_policy_weights(
        4, sizes=sizes, activations=activations, output=output, normalized=normalized, action_bound=0.7
    )
    data = encode_policy(weights)
    model = safetensors_to_onnx(data)
    rng = np.random.default_rng(4)
    # On the normalization's scale (means up to 50, deviations up to 20), some beyond its clip of 10 deviations.
    observations = rng.normal(scale=80.0 if normalized else 3.0, size=(N_OBSERVATIONS, sizes[0])).astype(np.float32)

    actions = run_onnx(model, observations)

    np.testing.assert_allclose(actions, NumpyActor.from_bytes(data).act(observations), rtol=0, atol=2e-5)
    assert actions.shape == (N_OBSERVATIONS, sizes[-1])
    assert np.all(np.abs(actions) <= 0.7)
    ops = [node.op_type for node in onnx.load_from_string(model).graph.node]
    assert (ops[:3] == ["Sub", "Div", "Clip"]) == normalized
    metadata = read_onnx_metadata(model)
    assert metadata == {**decode_actor(data).metadata(), "source_sha256": hashlib.sha256(data).hexdigest()}
    assert metadata["format"] == "policy-mlp/1" and metadata["origin"] == "trained"


def test_normalization_without_clip_exports_without_a_clip_node() -> None:
    weights = random_policy_weights(5, sizes=(3, 8, 1), normalized=True)
    assert weights.obs_normalization is not None
    unclipped = build_policy_weights(
        list(weights.layers),
        output=weights.output,
        action_low=weights.action_low,
        action_high=weights.action_high,
        obs_normalization=ObsNormalization(weights.obs_normalization.mean, weights.obs_normalization.var, clip=None),
        env_id=weights.env_id,
        origin="cleanrl",
    )
    data = encode_policy(unclipped)
    model = safetensors_to_onnx(data)
    assert [node.op_type for node in onnx.load_from_string(model).graph.node][:3] == ["Sub", "Div", "Gemm"]
    observations = np.random.default_rng(5).normal(scale=80.0, size=(200, 3)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(model, observations), NumpyActor.from_bytes(data).act(observations), rtol=0, atol=2e-5
    )
