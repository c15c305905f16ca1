"""Stable-Baselines3 `.zip` models (TD3, DDPG, SAC, PPO, A2C with an MlpPolicy and Box spaces), read without SB3.

An SB3 zip holds `data` (JSON of the algorithm's attributes: objects that JSON cannot hold are cloudpickled in a
`:serialized:` field, beside their readable attributes), `policy.pth` (the policy's state dict, `torch.save`d),
optimizer states and `_stable_baselines3_version`. We read the readable fields only (the spaces' bounds and
shapes, the policy class's module, the activation's class name) and never the cloudpickles, and the weights through
`models.imports.safe_pickle`. The deterministic action is what `model.predict(obs, deterministic=True)` returns:

    TD3, DDPG  actor.mu: Linear, act, ..., Linear, Tanh               -> unscale to the bounds     (tanh_scale)
    SAC        actor.latent_pi: Linear, act, ...; actor.mu: Linear    -> tanh -> unscale           (tanh_scale)
    PPO, A2C   mlp_extractor.policy_net: Linear, act, ...; action_net -> the Gaussian mean, clipped (clip)

SB3's defaults (stable_baselines3/{td3,sac}/policies.py, common/policies.py): ReLU for TD3 and SAC, Tanh for the
actor-critic policies; net_arch [400, 300] for TD3/DDPG, [256, 256] for SAC, pi [64, 64] for PPO/A2C. The layer
sizes are read from the tensors' shapes, so any net_arch is served as saved.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy.typing as npt

from models.imports.archive import SafeZip
from models.imports.errors import ImportRefusedError
from models.imports.mlp import ImportedMlp, build_mlp, dense
from models.imports.safe_pickle import read_state_dict
from models.policy_types import Activation, DenseLayer, ObsNormalization, OutputTransform

FIELD = "file"
# The zip's JSON `data` is small (a few kB plus the base64 pickles we skip); a huge one is not an SB3 model.
MAX_DATA_BYTES = 16 * 1024 * 1024
# torch.nn activation class names SB3 writes as `<class 'torch.nn.modules.activation.ReLU'>`.
_ACTIVATIONS = {
    "ReLU": Activation.RELU,
    "Tanh": Activation.TANH,
    "ELU": Activation.ELU,
    "LeakyReLU": Activation.LEAKY_RELU,
}
_DEFAULT_ACTIVATION = {
    "TD3": Activation.RELU,
    "DDPG": Activation.RELU,
    "SAC": Activation.RELU,
    "PPO": Activation.TANH,
    "A2C": Activation.TANH,
}
_POLICY_MODULES = {
    "stable_baselines3.td3.policies": "TD3",
    "stable_baselines3.sac.policies": "SAC",
    "stable_baselines3.common.policies": "ActorCritic",
}
_BOX_TYPE = "gymnasium.spaces.box.Box"
# policy_kwargs that change the deterministic forward pass in ways this reader does not reproduce.
_UNSUPPORTED_KWARGS = ("features_extractor_class", "squash_output", "use_expln", "full_std")


def read_sb3_zip(
    data: bytes, *, max_uncompressed: int, obs_normalization: ObsNormalization | None = None
) -> ImportedMlp:
    """The deterministic actor of an SB3 zip; ImportRefusedError naming the field (`file`, `file.data`,
    `file.policy.pth`) for anything that is not a supported SB3 MlpPolicy model."""
    archive = SafeZip(data, field=FIELD, max_uncompressed=max_uncompressed)
    for entry in ("data", "policy.pth"):
        if not archive.has(entry):
            raise ImportRefusedError(FIELD, f"not a Stable-Baselines3 zip: it has no {entry!r} entry")
    attributes = _read_data(archive.read("data"))
    version = _version(archive)
    algorithm = _algorithm(attributes)
    obs_low, obs_high = _box(attributes, "observation_space")
    act_low, act_high = _box(attributes, "action_space")
    if any(v is None for v in (*act_low, *act_high)):
        raise ImportRefusedError(f"{FIELD}.data.action_space", "has unbounded actions; the served action is bounded")
    if attributes.get("use_sde") is True:
        raise ImportRefusedError(f"{FIELD}.data.use_sde", "gSDE policies are not supported")
    kwargs = _policy_kwargs(attributes)
    for name in _UNSUPPORTED_KWARGS:
        if name in kwargs and not (name == "squash_output" and kwargs[name] is False):
            raise ImportRefusedError(f"{FIELD}.data.policy_kwargs.{name}", "is not supported (MlpPolicy only)")
    activation = _activation(kwargs, algorithm)

    tensors = read_state_dict(
        archive.read("policy.pth"), field=f"{FIELD}.policy.pth", max_uncompressed=max_uncompressed
    )
    _refuse_feature_extractor(tensors)
    layers, output = _actor_layers(tensors, algorithm, activation)
    return build_mlp(
        layers,
        output_transform=output,
        action_low=[float(v) for v in act_low if v is not None],
        action_high=[float(v) for v in act_high if v is not None],
        origin=f"sb3:{algorithm} {version}",
        obs_normalization=obs_normalization,
        observation_low=obs_low,
        observation_high=obs_high,
        field_name=f"{FIELD}.policy.pth",
    )


def _read_data(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_DATA_BYTES:
        raise ImportRefusedError(f"{FIELD}.data", f"is {len(raw)} bytes; an SB3 model's is far smaller")
    try:
        attributes = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportRefusedError(f"{FIELD}.data", f"is not JSON ({exc})") from None
    if not isinstance(attributes, dict):
        raise ImportRefusedError(f"{FIELD}.data", "is not a JSON object")
    return attributes


def _version(archive: SafeZip) -> str:
    if not archive.has("_stable_baselines3_version"):
        return "unknown"
    text = archive.read("_stable_baselines3_version")[:64].decode("ascii", "replace").strip()
    return text if re.fullmatch(r"[0-9A-Za-z.+_-]{1,32}", text) else "unknown"


def _algorithm(attributes: dict[str, Any]) -> str:
    policy_class = attributes.get("policy_class")
    module = policy_class.get("__module__") if isinstance(policy_class, dict) else None
    family = _POLICY_MODULES.get(module) if isinstance(module, str) else None
    if family is None:
        raise ImportRefusedError(
            f"{FIELD}.data.policy_class",
            f"is from {module!r}; TD3, DDPG, SAC, PPO and A2C policies are supported",
        )
    if family == "TD3":
        # SB3's DDPG is TD3 with one critic update per actor update and no target smoothing.
        ddpg = attributes.get("policy_delay") == 1 and attributes.get("target_noise_clip") == 0.0
        return "DDPG" if ddpg else "TD3"
    if family == "SAC":
        return "SAC"
    return "PPO" if "clip_range" in attributes else "A2C"


def _space_type(space: dict[str, Any]) -> str:
    match = re.fullmatch(r"<class '([\w.]+)'>", str(space.get(":type:", "")))
    return match.group(1) if match else str(space.get(":type:"))


def _box(attributes: dict[str, Any], name: str) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
    """A flat Box's bounds from its readable fields (`_shape`, `low`, `high` as numpy prints them); None: infinite."""
    field = f"{FIELD}.data.{name}"
    space = attributes.get(name)
    if not isinstance(space, dict):
        raise ImportRefusedError(field, "is missing")
    kind = _space_type(space)
    if kind != _BOX_TYPE:
        short = kind.rsplit(".", 1)[-1]
        raise ImportRefusedError(field, f"is a {short}; only flat Box spaces (continuous control) are supported")
    shape = space.get("_shape")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and 0 < shape[0] <= 65536):
        raise ImportRefusedError(field, f"has shape {shape}; only flat (1-D) Box spaces are supported (no images)")
    size = shape[0]
    return _numbers(space.get("low"), size, f"{field}.low"), _numbers(space.get("high"), size, f"{field}.high")


def _numbers(text: Any, size: int, field: str) -> tuple[float | None, ...]:
    """`[-1. -1. -8.]` (numpy's print of an array) as floats; infinities as None."""
    if not isinstance(text, str) or "..." in text:
        raise ImportRefusedError(field, f"is not a readable list of numbers: {str(text)[:80]!r}")
    parts = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ImportRefusedError(field, f"is not a readable list of numbers: {text[:80]!r}") from None
    if len(values) == 1 and size > 1:
        values = values * size
    if len(values) != size or any(math.isnan(v) for v in values):
        raise ImportRefusedError(field, f"has {len(values)} values for a space of size {size}")
    return tuple(v if math.isfinite(v) else None for v in values)


def _policy_kwargs(attributes: dict[str, Any]) -> dict[str, Any]:
    kwargs = attributes.get("policy_kwargs", {})
    if not isinstance(kwargs, dict):
        return {}
    return {key: value for key, value in kwargs.items() if not key.startswith(":")}


def _activation(kwargs: dict[str, Any], algorithm: str) -> Activation:
    written = kwargs.get("activation_fn")
    if written is None:
        return _DEFAULT_ACTIVATION[algorithm]
    match = re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>", str(written))
    activation = _ACTIVATIONS.get(match.group(1)) if match else None
    if activation is None:
        raise ImportRefusedError(
            f"{FIELD}.data.policy_kwargs.activation_fn",
            f"is {written!r}; supported: {', '.join(f'nn.{name}' for name in _ACTIVATIONS)}",
        )
    return activation


def _refuse_feature_extractor(tensors: dict[str, npt.NDArray[Any]]) -> None:
    learned = sorted(name for name in tensors if "features_extractor." in name)
    if learned:
        raise ImportRefusedError(
            f"{FIELD}.policy.pth",
            f"has a learned feature extractor ({learned[0]}...): a CNN or custom policy; only MlpPolicy is supported",
        )


def _sequential(tensors: dict[str, npt.NDArray[Any]], prefix: str) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    """The Linear layers of an nn.Sequential at `prefix`, in order (its activations have no parameters)."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.weight")
    indices = sorted(int(m.group(1)) for name in tensors if (m := pattern.fullmatch(name)))
    layers = []
    for index in indices:
        bias = tensors.get(f"{prefix}.{index}.bias")
        if bias is None:
            raise ImportRefusedError(f"{FIELD}.policy.pth", f"{prefix}.{index} has a weight but no bias")
        layers.append((tensors[f"{prefix}.{index}.weight"], bias))
    return layers


def _linear(tensors: dict[str, npt.NDArray[Any]], prefix: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    weight, bias = tensors.get(f"{prefix}.weight"), tensors.get(f"{prefix}.bias")
    if weight is None or bias is None:
        raise ImportRefusedError(f"{FIELD}.policy.pth", f"has no {prefix}.weight and {prefix}.bias")
    return weight, bias


def _actor_layers(
    tensors: dict[str, npt.NDArray[Any]], algorithm: str, activation: Activation
) -> tuple[list[DenseLayer], OutputTransform]:
    if algorithm in ("TD3", "DDPG"):
        linears = _sequential(tensors, "actor.mu")
        if not linears:
            raise ImportRefusedError(f"{FIELD}.policy.pth", "has no actor.mu layers (not a TD3/DDPG MlpPolicy)")
        hidden, last = linears[:-1], linears[-1]
        output = OutputTransform.TANH_SCALE
    elif algorithm == "SAC":
        hidden, last = _sequential(tensors, "actor.latent_pi"), _linear(tensors, "actor.mu")
        output = OutputTransform.TANH_SCALE
    else:
        hidden = _sequential(tensors, "mlp_extractor.shared_net") + _sequential(tensors, "mlp_extractor.policy_net")
        last = _linear(tensors, "action_net")
        output = OutputTransform.CLIP
    field = f"{FIELD}.policy.pth"
    layers = [dense(weight, bias, activation, field) for weight, bias in hidden]
    layers.append(dense(last[0], last[1], None, field))
    return layers, output
