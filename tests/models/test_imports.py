"""The torch-free importers against the libraries themselves: every policy trained elsewhere, read from its file gives
`model.predict(obs, deterministic=True)`'s actions, the restricted unpickler reads what torch's weights-only loader
reads and refuses what would run code, zips are read under their caps, and ONNX graphs are MLPs or named refusals."""

from __future__ import annotations

import contextlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.imports.archive import SafeZip
from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp
from models.imports.native import encode_imported
from models.imports.onnx_graph import read_onnx_actor
from models.imports.safe_pickle import read_state_dict
from models.imports.upload import ModelSpaces, parse_obs_normalization, read_upload
from models.onnx_export import safetensors_to_onnx
from models.policy import NumpyActor
from models.random_actor import random_actor_bytes
from models.weights import decode_actor
from tests.sb3_models import Trained, observations

PENDULUM = ModelSpaces(
    env_id="Pendulum-v1",
    obs_dim=3,
    act_dim=1,
    action_low=(-2.0,),
    action_high=(2.0,),
    observation_low=(-1.0, -1.0, -8.0),
    observation_high=(1.0, 1.0, 8.0),
)
LIMIT = 64 * 1024 * 1024


def served(mlp: ImportedMlp, obs: np.ndarray) -> np.ndarray:
    """What the service answers for an imported actor: its stored bytes through the serving actor."""
    return NumpyActor.from_bytes(encode_imported(mlp, env_id="Pendulum-v1")).act(obs)


def read(item: Trained):
    return read_upload(
        item.path.read_bytes(),
        spaces=PENDULUM,
        obs_normalization=parse_obs_normalization(item.obs_normalization),
        max_uncompressed=LIMIT,
        source_name=item.path.name,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["td3", "sac", "ppo", "ppo_normalized", "cleanrl", "cleanrl_torch"])
def test_each_import_acts_as_its_library_predicts(foreign: dict[str, Trained], name: str) -> None:
    item = foreign[name]
    imported = read(item)
    assert imported.origin.startswith(item.origin_prefix)
    obs = observations()
    expected = np.asarray(item.predict(obs), dtype=np.float32).reshape(len(obs), -1)
    assert np.abs(NumpyActor.from_bytes(imported.weights).act(obs) - expected).max() <= 1e-5
    stored = decode_actor(imported.weights)
    assert stored.origin == imported.origin and stored.env_id == "Pendulum-v1"
    assert (stored.obs_normalization is not None) == (item.obs_normalization is not None)


def test_the_restricted_unpickler_reads_what_torch_reads_weights_only(foreign: dict[str, Trained]) -> None:
    import torch

    with zipfile.ZipFile(foreign["td3"].path) as archive:
        policy_pth = archive.read("policy.pth")
    ours = read_state_dict(policy_pth, field="file", max_uncompressed=LIMIT)
    theirs = torch.load(io.BytesIO(policy_pth), weights_only=True, map_location="cpu")
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert np.array_equal(ours[name], tensor.numpy()), name


class _CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def hostile_state_dict(path: Path) -> bytes:
    """A torch.save-format zip whose data.pkl, unpickled, would create `path`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"actor.mu.0.weight": _CreatesAFile(path)}, protocol=2))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def test_a_pickle_that_would_create_a_file_is_refused_unrun(tmp_path: Path) -> None:
    target = tmp_path / "created-by-the-pickle"
    with pytest.raises(ImportRefusedError) as refused:
        read_state_dict(hostile_state_dict(target), field="file.policy.pth", max_uncompressed=LIMIT)
    assert refused.value.field == "file.policy.pth" and "open" in refused.value.message
    assert not target.exists()
    # A plain pickle (the pre-1.6 torch format, or VecNormalize's .pkl) is refused before it is read at all.
    with pytest.raises(ImportRefusedError, match="pickle"):
        read_upload(pickle.dumps(_CreatesAFile(target)), spaces=PENDULUM, obs_normalization=None, max_uncompressed=1)
    assert not target.exists()


def test_zips_are_read_under_their_caps() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data", "{}")
        archive.writestr("policy.pth", b"\0" * (8 * 1024 * 1024))
    bomb = buffer.getvalue()
    assert len(bomb) < 64 * 1024
    with pytest.raises(ImportRefusedError, match="zip bomb"):
        SafeZip(bomb, field="file", max_uncompressed=1024 * 1024)
    with pytest.raises(ImportRefusedError, match=r"zip archive|truncated|corrupt"):
        SafeZip(bomb[: len(bomb) // 2], field="file", max_uncompressed=LIMIT).read("policy.pth")


def test_our_own_onnx_export_imports_back_to_the_same_actor() -> None:
    weights = random_actor_bytes(3, hidden_size=16)
    actor = decode_actor(weights)
    imported = read_onnx_actor(safetensors_to_onnx(weights), action_low=[-2.0], action_high=[2.0])
    obs = observations(200)
    assert np.abs(served(imported, obs) - NumpyActor(actor).act(obs)).max() <= 1e-5


def _graph(nodes: list[onnx.NodeProto], initializers: list[np.ndarray], names: list[str]) -> bytes:
    graph = helper.make_graph(
        nodes,
        "actor",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(initializers, names, strict=True)
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_matmul_graph_with_tanh_scale_is_an_mlp_and_a_convolution_is_refused_by_name() -> None:
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = rng.normal(size=(3, 16)), rng.normal(size=16), rng.normal(size=(16, 1)), rng.normal(size=1)
    nodes = [
        helper.make_node("MatMul", ["obs", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("LeakyRelu", ["hb"], ["a"], alpha=0.01),
        helper.make_node("MatMul", ["a", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["ob"]),
        helper.make_node("Tanh", ["ob"], ["t"]),
        helper.make_node("Mul", ["t", "scale"], ["s"]),
        helper.make_node("Add", ["s", "offset"], ["action"]),
    ]
    data = _graph(
        nodes, [w1, b1, w2, b2, np.array([2.0]), np.array([0.0])], ["w1", "b1", "w2", "b2", "scale", "offset"]
    )
    mlp = read_onnx_actor(data, action_low=[-2.0], action_high=[2.0])
    obs = observations(100)
    hidden = obs @ w1 + b1
    expected = np.tanh(np.where(hidden > 0, hidden, 0.01 * hidden) @ w2 + b2) * 2.0
    assert mlp.output_transform == "tanh_scale" and np.abs(served(mlp, obs) - expected).max() <= 1e-5

    conv = [helper.make_node("Conv", ["obs", "w1"], ["c"]), helper.make_node("Relu", ["c"], ["action"])]
    with pytest.raises(ImportRefusedError) as refused:
        read_onnx_actor(_graph(conv, [w1], ["w1"]), action_low=[-2.0], action_high=[2.0])
    assert refused.value.unsupported == ("Conv",) and "Conv" in refused.value.message


def test_an_entry_that_inflates_past_its_declared_size_is_refused() -> None:
    """A zip that lies about an entry's size (declares 1 kB, holds 1 MB) yields no more than it declared."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("policy.pth", b"\0" * (1024 * 1024))
    data = bytearray(buffer.getvalue())
    real, lie = (1024 * 1024).to_bytes(4, "little"), (1024).to_bytes(4, "little")
    # The uncompressed size sits in the local header and in the central directory: rewrite both.
    assert data.count(real) == 2
    patched = bytes(data).replace(real, lie)
    archive = SafeZip(patched, field="file", max_uncompressed=LIMIT)
    with pytest.raises(ImportRefusedError, match=r"corrupt|inflates"):
        archive.read("policy.pth")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["DDPG", "A2C"])
def test_ddpg_and_a2c_zips_with_other_activations_act_as_predicted(tmp_path: Path, algorithm: str) -> None:
    stable_baselines3 = pytest.importorskip("stable_baselines3")
    import torch

    cls = getattr(stable_baselines3, algorithm)
    # Other activations than the defaults, read from policy_kwargs' activation_fn.
    activation = torch.nn.ELU if algorithm == "DDPG" else torch.nn.LeakyReLU
    kwargs = {"learning_starts": 50} if algorithm == "DDPG" else {"n_steps": 16}
    policy_kwargs = {"net_arch": [16, 16], "activation_fn": activation}
    model = cls("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", policy_kwargs=policy_kwargs, **kwargs)
    model.learn(100)
    model.save(tmp_path / "model.zip")
    imported = read_upload(
        (tmp_path / "model.zip").read_bytes(), spaces=PENDULUM, obs_normalization=None, max_uncompressed=LIMIT
    )
    assert imported.origin.startswith(f"sb3:{algorithm} ")
    assert decode_actor(imported.weights).activations == (("elu",) * 2 if algorithm == "DDPG" else ("leaky_relu",) * 2)
    obs = observations(500)
    expected = model.predict(obs, deterministic=True)[0]
    assert np.abs(NumpyActor.from_bytes(imported.weights).act(obs) - expected).max() <= 1e-5


@pytest.mark.slow
def test_mutated_files_are_refused_never_crash_a_reader(foreign: dict[str, Trained]) -> None:
    """Flipped bytes, truncations and random bytes, from real SB3 zips, a CleanRL file, our own file and its ONNX:
    each read ends in a policy or an ImportRefusedError, never another exception."""
    rng = np.random.default_rng(0)
    own = random_actor_bytes(1)
    seeds = [foreign["td3"].path.read_bytes(), foreign["cleanrl_torch"].path.read_bytes(), own]
    seeds.append(safetensors_to_onnx(own))
    for _ in range(500):
        data = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 20)):
            data[rng.integers(len(data))] = rng.integers(256)
        if rng.random() < 0.2:
            data = data[: rng.integers(len(data))]
        if rng.random() < 0.05:
            data = bytearray(rng.bytes(int(rng.integers(0, 200))))
        with contextlib.suppress(ImportRefusedError):
            read_upload(bytes(data), spaces=PENDULUM, obs_normalization=None, max_uncompressed=LIMIT)
