"""export_onnx: a ddpg-actor/1 file in, the ONNX model of the served actor out, bad input named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.onnx_export import read_onnx_metadata
from models.policy import NumpyActor
from models.random_actor import random_actor_bytes
from models.weights import WeightsFormatError
from trainer.onnx_command import export_onnx


def test_writes_a_model_that_acts_like_the_numpy_actor(tmp_path: Path) -> None:
    data = random_actor_bytes(1, hidden_size=16, eval_mean_return=-150.0)
    weights_path = tmp_path / "actor.safetensors"
    weights_path.write_bytes(data)
    out = tmp_path / "actor.onnx"

    export_onnx(weights_path, out)

    observations = np.random.default_rng(0).uniform(-1, 1, size=(64, 3)).astype(np.float32)
    session = ort.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    (actions,) = session.run(["action"], {"observation": observations})
    np.testing.assert_allclose(actions, NumpyActor.from_bytes(data).act(observations), rtol=0, atol=1e-5)
    metadata = read_onnx_metadata(out.read_bytes())
    assert metadata["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert metadata["eval_mean_return"] == -150.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["actor.onnx", "actor.safetensors"]  # no temp file left


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    weights_path = tmp_path / "actor.safetensors"
    weights_path.write_bytes(random_actor_bytes(2))
    out = tmp_path / "actor.onnx"
    out.write_bytes(b"old")

    export_onnx(weights_path, out)

    assert read_onnx_metadata(out.read_bytes())["seed"] == 2


def test_rejected_weights_name_the_file_and_leave_the_output_alone(tmp_path: Path) -> None:
    weights_path = tmp_path / "broken.safetensors"
    weights_path.write_bytes(random_actor_bytes(3)[:100])
    out = tmp_path / "actor.onnx"
    out.write_bytes(b"previous export")

    with pytest.raises(WeightsFormatError, match=r"broken\.safetensors: truncated"):
        export_onnx(weights_path, out)

    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["actor.onnx", "broken.safetensors"]


@pytest.mark.parametrize("make_path", [lambda d: d / "missing.safetensors", lambda d: d])
def test_missing_or_directory_input_is_a_weights_error(tmp_path: Path, make_path) -> None:
    with pytest.raises(WeightsFormatError, match=str(tmp_path)):
        export_onnx(make_path(tmp_path), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_unwritable_output_directory_raises_oserror(tmp_path: Path) -> None:
    weights_path = tmp_path / "actor.safetensors"
    weights_path.write_bytes(random_actor_bytes(4))
    with pytest.raises(OSError):
        export_onnx(weights_path, tmp_path / "no-such-dir" / "actor.onnx")
