"""The general policy format (models.policy_format): built and decoded strictly, round-tripped byte for byte."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from models.strict_safetensors import canonical_safetensors
from models.weights import (
    Activation,
    DenseLayer,
    ObsNormalization,
    OutputTransform,
    WeightsFormatError,
    build_policy_weights,
    decode_actor,
    encode_policy,
)

FIXTURE = "tests/models/fixtures/ddpg_actor_v1.safetensors"


def _layers(sizes: list[int], activations: list[str], seed: int = 0) -> list[DenseLayer]:
    rng = np.random.default_rng(seed)
    layers = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        activation = Activation(activations[index]) if index < len(sizes) - 2 else None
        layers.append(DenseLayer(rng.normal(size=(fan_out, fan_in)), rng.normal(size=fan_out), activation))
    return layers


def _ppo_like(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "output": OutputTransform.CLIP,
        "action_low": [-1.0, -2.0],
        "action_high": [1.0, 2.0],
        "obs_normalization": ObsNormalization(np.arange(4.0), np.full(4, 2.0), clip=5.0, epsilon=1e-8),
        "env_id": "Test-v0",
        "origin": "sb3:PPO 2.x",
        "config": {"n_steps": 2048},
        "seed": 3,
        "eval_mean_return": -12.5,
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    arguments.update(overrides)
    return arguments


def test_a_general_policy_round_trips_through_its_bytes() -> None:
    layers = _layers([4, 64, 32, 2], ["tanh", "elu"])
    weights = build_policy_weights(layers, **_ppo_like())  # type: ignore[arg-type]
    data = encode_policy(weights)
    decoded = decode_actor(data)
    assert decoded.format == "policy-mlp/1" and decoded.origin == "sb3:PPO 2.x"
    assert (decoded.obs_dim, decoded.act_dim, decoded.hidden_sizes) == (4, 2, (64, 32))
    assert decoded.activations == (Activation.TANH, Activation.ELU) and decoded.output == OutputTransform.CLIP
    for original, loaded in zip(layers, decoded.layers, strict=True):
        np.testing.assert_array_equal(original.weight, loaded.weight)
        np.testing.assert_array_equal(original.bias, loaded.bias)
    assert decoded.obs_normalization is not None
    assert decoded.obs_normalization.clip == 5.0 and decoded.obs_normalization.epsilon == 1e-8
    np.testing.assert_array_equal(decoded.obs_normalization.var, np.full(4, 2.0, np.float32))
    assert decoded.metadata()["obs_normalization"] == {"clip": 5.0, "epsilon": 1e-8}
    assert encode_policy(decoded) == data  # canonical: the same policy, the same bytes


def test_a_ddpg_actor_file_decodes_into_the_general_form_and_converts() -> None:
    data = Path(FIXTURE).read_bytes()
    weights = decode_actor(data)
    assert weights.format == "ddpg-actor/1" and weights.origin == "trained"
    assert weights.activations == (Activation.RELU, Activation.RELU) and weights.output == OutputTransform.TANH_SCALE
    assert weights.obs_normalization is None and weights.hidden_size == 64
    assert set(weights.metadata()) >= {"hidden_size"} and "origin" not in weights.metadata()
    converted = decode_actor(encode_policy(weights))
    assert converted.format == "policy-mlp/1" and converted.hidden_sizes == (64, 64)
    for old, new in zip(weights.layers, converted.layers, strict=True):
        np.testing.assert_array_equal(old.weight, new.weight)


@pytest.mark.parametrize(
    ("layers", "overrides", "message"),
    [
        (
            [
                DenseLayer(np.full((4, 3), np.nan), np.zeros(4), Activation.RELU),
                DenseLayer(np.ones((2, 4)), np.zeros(2), None),
            ],
            {},
            "layers.0.weight holds non-finite",
        ),
        (
            [DenseLayer(np.ones((4, 3)), np.zeros(4), Activation.RELU), DenseLayer(np.ones((2, 5)), np.zeros(2), None)],
            {},
            "layers.1.weight takes 5 inputs",
        ),
        (
            [DenseLayer(np.ones((4, 3)), np.zeros(5), Activation.RELU), DenseLayer(np.ones((2, 4)), np.zeros(2), None)],
            {},
            "layers.0.bias has shape",
        ),
        (
            [DenseLayer(np.ones((4, 3)), np.zeros(4), None), DenseLayer(np.ones((2, 4)), np.zeros(2), None)],
            {},
            "layers.0 is a hidden layer",
        ),
        ([DenseLayer(np.ones((2, 3)), np.zeros(2), Activation.TANH)], {}, "layers.0 is the last layer"),
        ([DenseLayer(np.ones((2, 3)), np.zeros(2), None)], {"action_low": [1.0, 2.0]}, "strictly below"),
        ([DenseLayer(np.ones((2, 3)), np.zeros(2), None)], {"action_low": [-1.0]}, "action_low must have 2"),
        ([DenseLayer(np.ones((2, 3)), np.zeros(2), None)], {"origin": ""}, "origin"),
        ([DenseLayer(np.ones((2, 3)), np.zeros(2), None)], {"output": "softmax"}, "output must be one of"),
    ],
)
def test_invalid_policies_are_refused_naming_the_fault(
    layers: list[DenseLayer], overrides: dict[str, object], message: str
) -> None:
    arguments = _ppo_like(obs_normalization=None) | overrides
    with pytest.raises(WeightsFormatError, match=message):
        build_policy_weights(layers, **arguments)  # type: ignore[arg-type]


def test_invalid_normalizations_are_refused() -> None:
    with pytest.raises(WeightsFormatError, match=r"obs_normalization\.var must be >= 0"):
        ObsNormalization(np.zeros(3), np.array([1.0, -1.0, 1.0]))
    with pytest.raises(WeightsFormatError, match=r"obs_normalization\.mean holds non-finite"):
        ObsNormalization(np.array([0.0, np.nan, 0.0]), np.ones(3))
    with pytest.raises(WeightsFormatError, match="divide by zero"):
        ObsNormalization(np.zeros(3), np.zeros(3), epsilon=0.0)
    with pytest.raises(WeightsFormatError, match="clip must be > 0"):
        ObsNormalization(np.zeros(3), np.ones(3), clip=0.0)
    layers = _layers([4, 8, 2], ["relu"])
    with pytest.raises(WeightsFormatError, match="has 3 values but the policy takes 4"):
        build_policy_weights(layers, **_ppo_like(obs_normalization=ObsNormalization(np.zeros(3), np.ones(3))))  # type: ignore[arg-type]


def _rewritten(data: bytes, edit: object) -> bytes:
    """The file with its metadata edited (a callable on the dict) and re-saved, bypassing the encoder's checks."""
    weights = decode_actor(data)
    meta = weights.metadata_strings()
    edit(meta)  # type: ignore[operator]
    return canonical_safetensors(st_save(dict(weights.tensors), metadata=meta))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(extra="1"), "unknown keys for policy-mlp/1: extra"),
        (lambda m: m.pop("origin"), "lacks required keys: origin"),
        (lambda m: m.update(activations='["relu", "swish"]'), r"activations\[1\] must be one of"),
        (lambda m: m.update(activations='["relu"]'), "'activations' must be a list of 2"),
        (lambda m: m.update(hidden_sizes="[64, 33]"), "layers.1.weight has shape"),
        (lambda m: m.update(output="tanh"), "output must be one of"),
        (lambda m: m.update(obs_normalization="null"), "expected tensors"),
        (lambda m: m.update(obs_normalization='{"clip": 1.0}'), "'obs_normalization' must be null or an object"),
    ],
)
def test_invalid_policy_files_are_refused(edit: object, message: str) -> None:
    data = encode_policy(build_policy_weights(_layers([4, 64, 32, 2], ["tanh", "relu"]), **_ppo_like()))  # type: ignore[arg-type]
    with pytest.raises(WeightsFormatError, match=message):
        decode_actor(_rewritten(data, edit))


def test_a_nan_in_a_policy_file_is_refused_naming_the_tensor() -> None:
    weights = build_policy_weights(_layers([4, 8, 2], ["relu"]), **_ppo_like())  # type: ignore[arg-type]
    tensors = dict(weights.tensors)
    tensors["obs_normalization.mean"] = np.array([0.0, np.nan, 0.0, 0.0], np.float32)
    data = st_save(tensors, metadata=weights.metadata_strings())
    with pytest.raises(WeightsFormatError, match=r"obs_normalization\.mean holds non-finite"):
        decode_actor(data)
    assert json.loads(weights.metadata_strings()["hidden_sizes"]) == [8]


def test_a_later_format_is_named_as_unsupported_not_as_broken() -> None:
    weights = decode_actor(Path(FIXTURE).read_bytes())
    meta = {"format": "policy-mlp/2", "env_id": "Pendulum-v1"}
    with pytest.raises(WeightsFormatError, match=r"unsupported format 'policy-mlp/2'; expected one of"):
        decode_actor(st_save(dict(weights.tensors), metadata=meta))
