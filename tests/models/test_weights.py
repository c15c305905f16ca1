"""The ddpg-actor/1 format: round trip through the encoder and the strict loader's refusals."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save as st_save

from models.networks import Actor
from models.weights import REQUIRED_METADATA, WeightsFormatError, decode_actor, encode_actor, load_actor_file

LOW = np.array([-2.0, -1.0], dtype=np.float32)
HIGH = np.array([2.0, 3.0], dtype=np.float32)


def _state(obs_dim: int = 3, hidden: int = 8, act_dim: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    actor = Actor(obs_dim, hidden, act_dim)
    return {k: v.detach().numpy().copy() for k, v in actor.state_dict().items()}


def _encode(state: dict[str, np.ndarray] | None = None, **overrides: object) -> bytes:
    kwargs: dict = {
        "env_id": "Test-v0",
        "action_low": LOW,
        "action_high": HIGH,
        "config": {"hidden_size": 8, "seed": 4},
        "seed": 4,
        "eval_mean_return": -123.5,
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    kwargs.update(overrides)
    return encode_actor(_state() if state is None else state, **kwargs)


def _raw(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None) -> bytes:
    """safetensors bytes written directly, bypassing encode_actor's own validation."""
    return st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)


def _valid_metadata() -> dict[str, str]:
    header_len = struct.unpack("<Q", _encode()[:8])[0]
    return json.loads(_encode()[8 : 8 + header_len])["__metadata__"]


def test_round_trip_keeps_tensors_and_metadata() -> None:
    state = _state()
    weights = decode_actor(_encode(state))
    for name, array in state.items():
        np.testing.assert_array_equal(weights.tensors[name], array)
    assert (weights.obs_dim, weights.act_dim, weights.hidden_size) == (3, 2, 8)
    assert weights.env_id == "Test-v0"
    np.testing.assert_array_equal(weights.action_low, LOW)
    np.testing.assert_array_equal(weights.action_high, HIGH)
    assert weights.config == {"hidden_size": 8, "seed": 4}
    assert weights.seed == 4 and weights.eval_mean_return == -123.5
    assert weights.created_at == "2024-01-01T00:00:00+00:00"
    meta = weights.metadata()
    assert meta["format"] == "ddpg-actor/1" and set(meta) == set(REQUIRED_METADATA)


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "actor.safetensors"
    path.write_bytes(_encode())
    assert load_actor_file(path).hidden_size == 8


def test_tensor_names_are_the_seed_actor_state_dict_keys() -> None:
    header_len = struct.unpack("<Q", _encode()[:8])[0]
    header = json.loads(_encode()[8 : 8 + header_len])
    assert sorted(k for k in header if k != "__metadata__") == sorted(_state())


def test_rejects_bytes_that_are_not_safetensors() -> None:
    for junk in (b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, json.dumps({"a": 1}).encode()):
        with pytest.raises(WeightsFormatError, match="safetensors"):
            decode_actor(junk)


def test_rejects_a_truncated_file() -> None:
    data = _encode()
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(WeightsFormatError):
            decode_actor(data[:cut])


def test_rejects_corrupt_header_bytes() -> None:
    data = bytearray(_encode())
    data[9:14] = b"\xff\xfe\x00{{"
    with pytest.raises(WeightsFormatError):
        decode_actor(bytes(data))


def test_rejects_a_file_without_metadata() -> None:
    with pytest.raises(WeightsFormatError, match="metadata"):
        decode_actor(_raw(_state(), None))


def test_rejects_missing_metadata_keys() -> None:
    meta = _valid_metadata()
    del meta["action_high"]
    with pytest.raises(WeightsFormatError, match="action_high"):
        decode_actor(_raw(_state(), meta))


def test_rejects_a_wrong_format_tag() -> None:
    meta = _valid_metadata() | {"format": "ddpg-actor/2"}
    with pytest.raises(WeightsFormatError, match="format"):
        decode_actor(_raw(_state(), meta))


def test_rejects_tensor_shapes_that_disagree_with_the_metadata() -> None:
    state = _state()
    state["linear2.weight"] = np.zeros((8, 7), dtype=np.float32)
    with pytest.raises(WeightsFormatError, match="shape"):
        decode_actor(_raw(state, _valid_metadata()))
    # A consistent network of another size still contradicts the declared hidden_size.
    with pytest.raises(WeightsFormatError, match="shape"):
        decode_actor(_raw(_state(hidden=16), _valid_metadata()))


def test_rejects_missing_or_extra_tensors() -> None:
    state = _state()
    del state["linear3.bias"]
    with pytest.raises(WeightsFormatError, match="tensors"):
        decode_actor(_raw(state, _valid_metadata()))
    with pytest.raises(WeightsFormatError, match="tensors"):
        decode_actor(_raw(_state() | {"extra": np.zeros(2, dtype=np.float32)}, _valid_metadata()))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite_weights(bad: float) -> None:
    state = _state()
    state["linear2.bias"][3] = bad
    with pytest.raises(WeightsFormatError, match="non-finite"):
        decode_actor(_raw(state, _valid_metadata()))
    with pytest.raises(WeightsFormatError):  # and the encoder refuses to produce such a file
        _encode(state)


def test_rejects_bad_action_bounds() -> None:
    with pytest.raises(WeightsFormatError, match="action_low"):
        _encode(action_low=HIGH, action_high=LOW)
    meta = _valid_metadata() | {"action_high": "[1.0]"}
    with pytest.raises(WeightsFormatError, match="action_high"):
        decode_actor(_raw(_state(), meta))


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsFormatError, match="no such"):
        load_actor_file(tmp_path / "nope.safetensors")
