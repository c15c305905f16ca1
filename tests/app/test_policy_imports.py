"""POST /models/{name}/policies over HTTP: policies trained by Stable-Baselines3 and CleanRL, imported and served
exactly as their libraries predict (/act one and batch, KServe V1, Open Inference V2, the ONNX download, one whole
episode), rolled out as a canary like any policy, and every refused file refused with nothing stored."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.app.conftest import Api, ApiFactory
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.models.test_imports import hostile_state_dict
from tests.sb3_models import ENV_ID, Trained, observations

TOLERANCE = 1e-5
IMPORTED = ["td3", "sac", "ppo", "ppo_normalized", "cleanrl", "cleanrl_torch"]

# Trains policies with Stable-Baselines3 and CleanRL (once per session, about 10 s).
pytestmark = pytest.mark.slow


def upload(api: Api, item: Trained, model: str = "pendulum", **data: str) -> Any:
    files, fields = item.upload()
    return api.client.post(f"/models/{model}/policies", files=files, data={**fields, **data})


def upload_bytes(api: Api, content: bytes, name: str = "policy.zip", model: str = "pendulum", **data: str) -> Any:
    return api.client.post(f"/models/{model}/policies", files={"file": (name, content)}, data=data)


def imported(api: Api, item: Trained, **data: str) -> int:
    response = upload(api, item, **data)
    assert response.status_code == 201, response.text
    policy_id: int = response.json()["id"]
    api.refresh()
    return policy_id


def policy_count(api: Api, model: str = "pendulum") -> int:
    total: int = api.client.get(f"/models/{model}/policies").json()["total"]
    return total


def reference(item: Trained, obs: np.ndarray) -> np.ndarray:
    return np.asarray(item.predict(obs), dtype=np.float32).reshape(len(obs), -1)


def ensure_model(api: Api, name: str = "pendulum", env_id: str = ENV_ID) -> None:
    if api.client.get(f"/models/{name}").status_code == 404:
        assert api.client.post("/models", json={"name": name, "env_id": env_id}).status_code == 201


@pytest.fixture
def empty_database_url(tmp_path: Path) -> str:
    """SQLite only: what is checked here is the conversion of each library's files and what is served from them;
    a policy is stored as any other (register_policy, on both databases in tests/store/ and test_models_api.py)."""
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def pendulum(api: Api) -> Api:
    ensure_model(api)
    return api


@pytest.mark.parametrize("name", IMPORTED)
def test_an_import_is_served_as_its_library_predicts(pendulum: Api, foreign: dict[str, Trained], name: str) -> None:
    api, item = pendulum, foreign[name]
    response = upload(api, item)
    assert response.status_code == 201, response.text
    body = response.json()
    policy_id = body["id"]
    assert body["origin"].startswith(item.origin_prefix) and body["env_id"] == ENV_ID
    assert api.client.get(f"/policies/{policy_id}").json()["origin"] == body["origin"]
    api.refresh()
    obs = observations()
    expected = reference(item, obs)

    batch = api.client.post("/act", json={"observations": obs.tolist(), "policy_id": policy_id}).json()
    assert np.abs(np.asarray(batch["actions"], np.float32) - expected).max() <= TOLERANCE
    for row in range(0, len(obs), 20):  # 50 single-observation requests (the compiled one-observation path)
        one = api.client.post("/act", json={"observation": obs[row].tolist(), "policy_id": policy_id}).json()
        assert np.abs(np.asarray(one["action"], np.float32) - expected[row]).max() <= TOLERANCE

    v1 = api.client.post(f"/v1/models/{policy_id}:predict", json={"instances": obs.tolist()}).json()
    assert np.abs(np.asarray(v1["predictions"], np.float32) - expected).max() <= TOLERANCE
    v2_body = {
        "inputs": [{"name": "observation", "shape": [len(obs), 3], "datatype": "FP32", "data": obs.ravel().tolist()}]
    }
    v2 = api.client.post(f"/v2/models/{policy_id}/infer", json=v2_body).json()
    v2_actions = np.asarray(v2["outputs"][0]["data"], np.float32).reshape(len(obs), -1)
    assert np.abs(v2_actions - expected).max() <= TOLERANCE

    download = api.client.get(f"/policies/{policy_id}/actor.onnx")
    assert download.status_code == 200
    session = ort.InferenceSession(download.content, providers=["CPUExecutionProvider"])
    (onnx_actions,) = session.run(["action"], {"observation": obs})
    assert np.abs(np.asarray(onnx_actions) - expected).max() <= TOLERANCE

    gif = api.client.get(f"/policies/{policy_id}/rollout.gif")
    assert gif.status_code in (200, 503), gif.text  # 503: no renderer on this machine


@pytest.mark.parametrize("name", ["td3", "ppo_normalized"])
def test_an_episode_through_act_returns_what_the_library_s_own_rollout_returns(
    pendulum: Api, foreign: dict[str, Trained], name: str
) -> None:
    api, item = pendulum, foreign[name]
    policy_id = imported(api, item)

    def episode(action_for: Any) -> float:
        env = gym.make(ENV_ID)
        obs, _ = env.reset(seed=7)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(action_for(obs))
            total += float(reward)
            done = terminated or truncated
        return total

    theirs = episode(lambda obs: reference(item, obs[None, :].astype(np.float32))[0])
    ours = episode(
        lambda obs: np.asarray(
            api.client.post("/act", json={"observation": obs.tolist(), "policy_id": policy_id}).json()["action"],
            np.float32,
        )
    )
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-4)


def test_a_canary_of_an_imported_policy_against_a_trained_champion(pendulum: Api, foreign: dict[str, Trained]) -> None:
    api = pendulum
    champion = api.add_policy(make_policy_bytes(1, eval_mean_return=-150.0), promote="always")
    challenger = imported(api, foreign["td3"], promote="never")
    assert api.client.get(f"/policies/{champion}").json()["origin"] == "trained"
    response = api.client.put(
        "/models/pendulum/rollout",
        json={
            "challenger": challenger,
            "mode": "canary",
            "percent": 50,
            "guard": {"min_episodes": 5, "max_regression": 10.0},
        },
    )
    assert response.status_code == 200, response.text
    obs = [0.3, -0.2, 0.5]
    sides: dict[str, int] = {}
    for i in range(40):
        session = f"episode-{i}"
        first = api.client.post("/act", json={"observation": obs, "session": session}).json()
        sides[session] = first["policy_id"]
        reward = -15.0 if sides[session] == challenger else -2.5
        for done in (False, True):  # sticky: the session keeps its side until its episode ends
            step = api.client.post(
                "/act", json={"observation": obs, "session": session, "reward": reward, "done": done}
            ).json()
            assert step["policy_id"] == sides[session]
    assert set(sides.values()) == {champion, challenger}
    # The guard sees the challenger's live returns fall behind and rolls it back.
    api.client.portal.call(api.client.app.state.act_runtime.routing.live.flush)  # type: ignore[attr-defined,union-attr]
    api.refresh()
    state = api.client.get("/models/pendulum/rollout").json()
    assert state["active"] is None and state["history"][0]["status"] == "rolled_back"
    assert "guard" in state["history"][0]["end_reason"]
    assert {
        api.client.post("/act", json={"observation": obs, "session": f"later-{i}"}).json()["policy_id"]
        for i in range(10)
    } == {champion}


# ---- refusals: a 4xx naming the field, and nothing stored --------------------------------------------------------


def refused(api: Api, response: Any, field: str, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = assert_error_shape(response.json())
    assert error["message"].startswith(f"{field}:") or status != 422, error  # type: ignore[union-attr]
    assert policy_count(api) == 0
    return error


def with_entry(zip_path: Path, name: str, content: bytes) -> bytes:
    """The zip at `zip_path` with entry `name` replaced."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, content if info.filename == name else source.read(info.filename))
    return buffer.getvalue()


def test_a_zip_whose_policy_pth_would_create_a_file_is_refused_and_nothing_is_created(
    pendulum: Api, foreign: dict[str, Trained], tmp_path: Path
) -> None:
    target = tmp_path / "created-by-the-upload"
    content = with_entry(foreign["td3"].path, "policy.pth", hostile_state_dict(target))
    error = refused(pendulum, upload_bytes(pendulum, content), "file.policy.pth")
    assert "refused, not run" in str(error["message"])
    assert not target.exists()


def test_discrete_action_and_cnn_sb3_policies_are_refused(pendulum: Api, tmp_path: Path) -> None:
    PPO = pytest.importorskip("stable_baselines3").PPO

    discrete = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, device="cpu")
    discrete.save(tmp_path / "cartpole.zip")
    error = refused(
        pendulum, upload_bytes(pendulum, (tmp_path / "cartpole.zip").read_bytes()), "file.data.action_space"
    )
    assert "Discrete" in str(error["message"])

    class Pixels(gym.Env):  # a tiny image environment, enough for SB3 to build a CnnPolicy
        observation_space = gym.spaces.Box(0, 255, (36, 36, 1), np.uint8)
        action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            return np.zeros((36, 36, 1), np.uint8), {}

        def step(self, action: Any) -> Any:
            return np.zeros((36, 36, 1), np.uint8), 0.0, True, False, {}

    cnn = PPO("CnnPolicy", Pixels(), n_steps=32, batch_size=32, device="cpu")
    cnn.save(tmp_path / "cnn.zip")
    error = refused(
        pendulum, upload_bytes(pendulum, (tmp_path / "cnn.zip").read_bytes()), "file.data.observation_space"
    )
    assert "images" in str(error["message"])


def test_mismatched_spaces_are_refused_naming_the_mismatch(pendulum: Api, foreign: dict[str, Trained]) -> None:
    api = pendulum
    ensure_model(api, "car", "MountainCarContinuous-v0")
    response = upload(api, foreign["td3"], model="car")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("spaces.obs_dim:")
    assert policy_count(api, "car") == 0
    # The right sizes but other action bounds: a CleanRL actor scaled for [-1, 1].
    content = foreign["cleanrl"].path.read_bytes()
    from safetensors.numpy import load, save

    tensors = load(content)
    tensors["action_scale"] = np.ones(1, np.float32)
    error = refused(api, upload_bytes(api, save(tensors), "actor.safetensors"), "spaces.action_low")
    assert "[-1.0]" in str(error["message"])


def test_vec_normalize_pickle_is_refused_with_the_lines_that_export_it(
    pendulum: Api, foreign: dict[str, Trained]
) -> None:
    pkl = foreign["ppo_normalized"].extra["pkl"]  # type: ignore[index]
    error = refused(pendulum, upload_bytes(pendulum, pkl.read_bytes(), "vec_normalize.pkl"), "file")
    message = str(error["message"])
    assert "pickle" in message and "obs_rms.mean" in message and "obs_normalization" in message
    # The three lines do export what the upload takes.
    lines = message.split("\n")[-3:]
    assert len(lines) == 3


def test_zip_bombs_truncated_archives_and_oversized_uploads_are_refused(
    make_api: ApiFactory, foreign: dict[str, Trained]
) -> None:
    api = make_api(max_upload_bytes=256 * 1024)
    ensure_model(api)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data", "{}")
        archive.writestr("policy.pth", b"\0" * (16 * 1024 * 1024))
    error = refused(api, upload_bytes(api, buffer.getvalue()), "file")
    assert "zip bomb" in str(error["message"])
    content = foreign["td3"].path.read_bytes()
    refused(api, upload_bytes(api, content[: len(content) - 200]), "file")
    too_big = upload_bytes(api, b"PK\x03\x04" + b"\0" * (300 * 1024))
    assert too_big.status_code == 413, too_big.text

    def chunked_body() -> Any:  # no Content-Length: counted as it streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.zip"\r\n\r\n'
        for _ in range(8):
            yield b"\0" * (64 * 1024)

    headers = {"content-type": "multipart/form-data; boundary=b"}
    streamed = api.client.post("/models/pendulum/policies", content=chunked_body(), headers=headers)
    assert streamed.status_code == 413, streamed.text
    # /act keeps its own, smaller limit; the upload route has MAX_UPLOAD_BYTES.
    assert api.client.post("/act", content=b"{" + b" " * (5 * 1024 * 1024)).status_code == 413


def test_an_onnx_convolution_and_nan_weights_are_refused_by_name(pendulum: Api, foreign: dict[str, Trained]) -> None:
    api = pendulum
    graph = helper.make_graph(
        [helper.make_node("Conv", ["obs", "w"], ["action"])],
        "conv",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.ones((1, 1, 1), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    error = refused(api, upload_bytes(api, model.SerializeToString(), "actor.onnx"), "file")
    assert "Conv" in str(error["message"])

    from safetensors.numpy import load, save

    tensors = load(foreign["cleanrl"].path.read_bytes())
    tensors["fc2.weight"][0, 0] = np.nan
    error = refused(api, upload_bytes(api, save(tensors), "actor.safetensors"), "file")
    assert "NaN" in str(error["message"])


def test_bad_obs_normalization_is_refused_naming_its_field(pendulum: Api, foreign: dict[str, Trained]) -> None:
    for value, field in (
        ("not json", "obs_normalization"),
        (json.dumps({"mean": [0.0, 0.0], "var": [1.0, 1.0]}), "obs_normalization.mean"),
        (json.dumps({"mean": [0.0] * 3, "var": [1.0] * 3, "clip": -1}), "obs_normalization.clip"),
    ):
        refused(pendulum, upload(pendulum, foreign["ppo"], obs_normalization=value), field)


def test_an_sb3_td3_of_default_size_is_over_the_act_limit_and_still_uploads(pendulum: Api, tmp_path: Path) -> None:
    TD3 = pytest.importorskip("stable_baselines3").TD3

    # SB3's default TD3 net_arch is [400, 300]; a few updates fill the optimizer state a trained zip carries.
    model = TD3("MlpPolicy", ENV_ID, seed=0, device="cpu", learning_starts=100, train_freq=4, gradient_steps=1)
    model.learn(104)
    model.save(tmp_path / "td3.zip")
    content = (tmp_path / "td3.zip").read_bytes()
    assert len(content) > pendulum.client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response = upload_bytes(pendulum, content, "td3.zip")
    assert response.status_code == 201, response.text
    assert response.json()["meta"]["hidden_sizes"] == [400, 300]
    pendulum.refresh()
    obs = observations(64)
    served = pendulum.client.post("/act", json={"observations": obs.tolist(), "policy_id": response.json()["id"]})
    expected = model.predict(obs, deterministic=True)[0]
    assert np.abs(np.asarray(served.json()["actions"], np.float32) - expected).max() <= TOLERANCE


def test_our_own_files_upload_as_they_are_and_must_fit_the_model(pendulum: Api) -> None:
    weights = make_policy_bytes(4)
    response = upload_bytes(pendulum, weights, "actor.safetensors")
    assert response.status_code == 201, response.text
    policy = response.json()
    assert policy["origin"] == "trained" and pendulum.client.get(f"/policies/{policy['id']}/weights").content == weights
    response = upload_bytes(pendulum, make_policy_bytes(5, action_bound=1.0), "actor.safetensors")
    assert response.status_code == 422 and response.json()["error"]["message"].startswith("spaces.action_low:")
    assert policy_count(pendulum) == 1


@pytest.mark.parametrize("name", ["td3", "ppo_normalized"])
def test_a_downloaded_onnx_imports_back_as_the_same_policy(
    pendulum: Api, foreign: dict[str, Trained], name: str
) -> None:
    api, item = pendulum, foreign[name]
    policy_id = imported(api, item)
    onnx_bytes = api.client.get(f"/policies/{policy_id}/actor.onnx").content
    response = upload_bytes(api, onnx_bytes, "actor.onnx")
    assert response.status_code == 201, response.text
    assert response.json()["origin"] == "onnx"
    assert (response.json()["meta"]["obs_normalization"] is None) == (item.obs_normalization is None)
    api.refresh()
    obs = observations()
    served = api.client.post("/act", json={"observations": obs.tolist(), "policy_id": response.json()["id"]}).json()
    assert np.abs(np.asarray(served["actions"], np.float32) - reference(item, obs)).max() <= TOLERANCE
    # The graph normalizes already: statistics given beside it are a contradiction, not a second normalization.
    if item.obs_normalization is not None:
        refused = upload_bytes(api, onnx_bytes, "actor.onnx", obs_normalization=item.obs_normalization)
        assert refused.status_code == 422 and refused.json()["error"]["message"].startswith("obs_normalization:")


def test_a_file_that_is_not_what_it_claims_is_refused(pendulum: Api, foreign: dict[str, Trained]) -> None:
    for content, name in (
        (b"not a policy at all", "td3.zip"),
        (b'{"mean": [0, 0, 0]}', "actor.onnx"),
        (foreign["td3"].path.read_bytes()[:4096], "td3.zip"),  # the first 4 kB of a real zip
    ):
        refused(pendulum, upload_bytes(pendulum, content, name), "file")
    # What a file is comes from its bytes: an SB3 zip named .onnx is still an SB3 zip.
    response = upload_bytes(pendulum, foreign["td3"].path.read_bytes(), "actor.onnx")
    assert response.status_code == 201 and response.json()["origin"].startswith("sb3:TD3 ")


def test_a_model_created_from_its_spaces_takes_an_import_that_fits_its_spaces(api: Api) -> None:
    spaces = {"observation_space": {"low": [None] * 3, "high": [None] * 3}, "action_space": {"low": [-2], "high": [2]}}
    assert api.client.post("/models", json={"name": "arm", **spaces}).status_code == 201
    response = upload_bytes(api, make_policy_bytes(4, obs_dim=3), "actor.safetensors", model="arm", promote="always")
    assert response.status_code == 201, response.text
    policy_id = response.json()["id"]
    api.refresh()
    answer = api.client.post("/act", json={"observation": [0.1, 0.2, 0.3], "model": "arm"})
    assert answer.status_code == 200 and answer.json()["policy_id"] == policy_id, answer.text
    refused = upload_bytes(api, make_policy_bytes(5, obs_dim=4), "actor.safetensors", model="arm")
    assert refused.status_code == 422 and "client/arm" in refused.json()["error"]["message"], refused.text
