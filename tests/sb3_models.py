"""Small policies trained elsewhere, for the import tests: Stable-Baselines3 TD3, SAC and PPO (with and without
VecNormalize) and a CleanRL-shaped actor, each trained in-process on Pendulum for a few hundred steps on small nets,
then saved as their libraries save them. Trained once per test session (`foreign` fixture, imported by the tests
that use it), because training, even this short, takes seconds.

`Trained.predict` is the library's own deterministic action (`model.predict(obs, deterministic=True)`, after
`VecNormalize.normalize_obs` where there is one): the reference every served answer is compared with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

ENV_ID = "Pendulum-v1"


@dataclass
class Trained:
    """One saved policy: its file, the upload's `obs_normalization` field (or None), and its reference actions."""

    name: str
    path: Path
    predict: Callable[[np.ndarray], np.ndarray]
    obs_normalization: str | None = None
    origin_prefix: str = ""
    extra: dict[str, Any] | None = None

    def upload(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The multipart `files` and `data` of POST /models/{name}/policies."""
        data = {} if self.obs_normalization is None else {"obs_normalization": self.obs_normalization}
        return {"file": (self.path.name, self.path.read_bytes(), "application/octet-stream")}, data


def observations(count: int = 1000, seed: int = 0) -> np.ndarray:
    """`count` observations drawn from Pendulum's observation space (float32)."""
    space = gym.make(ENV_ID).observation_space
    space.seed(seed)
    return np.stack([space.sample() for _ in range(count)]).astype(np.float32)


def _sb3(directory: Path) -> dict[str, Trained]:
    import torch
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    torch.set_num_threads(1)
    small = {"net_arch": [32, 32]}
    found: dict[str, Trained] = {}

    def deterministic(model: Any) -> Callable[[np.ndarray], np.ndarray]:
        return lambda obs: model.predict(obs, deterministic=True)[0]

    for algorithm, kwargs in (
        (TD3, {"learning_starts": 100, "train_freq": 4, "gradient_steps": 4}),
        (SAC, {"learning_starts": 100, "train_freq": 4, "gradient_steps": 4}),
    ):
        model = algorithm("MlpPolicy", ENV_ID, policy_kwargs=dict(small), seed=0, device="cpu", **kwargs)
        model.learn(300)
        path = directory / f"{algorithm.__name__.lower()}.zip"
        model.save(path)
        found[algorithm.__name__.lower()] = Trained(
            algorithm.__name__.lower(), path, deterministic(model), origin_prefix=f"sb3:{algorithm.__name__} "
        )
        found[algorithm.__name__.lower()].extra = {"model": model}

    ppo = PPO(
        "MlpPolicy", ENV_ID, n_steps=128, batch_size=64, n_epochs=2, policy_kwargs=dict(small), seed=0, device="cpu"
    )
    ppo.learn(256)
    ppo.save(directory / "ppo.zip")
    found["ppo"] = Trained("ppo", directory / "ppo.zip", deterministic(ppo), origin_prefix="sb3:PPO ")
    found["ppo"].extra = {"model": ppo}

    venv = VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID)]), norm_obs=True, norm_reward=True)
    normalized = PPO("MlpPolicy", venv, n_steps=128, batch_size=64, n_epochs=2, policy_kwargs=dict(small), seed=1)
    normalized.learn(256)
    normalized.save(directory / "ppo_normalized.zip")
    venv.save(str(directory / "vec_normalize.pkl"))
    venv.training = False
    stats = json.dumps(
        {
            "mean": venv.obs_rms.mean.tolist(),
            "var": venv.obs_rms.var.tolist(),
            "clip": venv.clip_obs,
            "epsilon": venv.epsilon,
        }
    )
    found["ppo_normalized"] = Trained(
        "ppo_normalized",
        directory / "ppo_normalized.zip",
        lambda obs: normalized.predict(venv.normalize_obs(obs), deterministic=True)[0],
        obs_normalization=stats,
        origin_prefix="sb3:PPO ",
        extra={"model": normalized, "vec_normalize": venv, "pkl": directory / "vec_normalize.pkl"},
    )
    return found


def make_cleanrl_actor(obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, hidden: int = 32) -> Any:
    """CleanRL's DDPG actor (ddpg_continuous_action.py), its layer and buffer names exactly, on small layers."""
    import torch
    from torch import nn

    class Actor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(obs_dim, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.fc_mu = nn.Linear(hidden, act_dim)
            self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
            self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.fc1(x))
            x = torch.relu(self.fc2(x))
            return torch.tanh(self.fc_mu(x)) * self.action_scale + self.action_bias

    return Actor()


def _cleanrl(directory: Path) -> dict[str, Trained]:
    """A CleanRL-shaped actor after a few hundred DDPG actor updates against a fixed random critic on Pendulum
    states: enough to move every weight away from its initialisation, in well under a second."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    env = gym.make(ENV_ID)
    low, high = env.action_space.low, env.action_space.high
    actor = make_cleanrl_actor(3, 1, low, high)
    critic = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    states = torch.as_tensor(observations(256, seed=1))
    for _ in range(200):
        loss = -critic(torch.cat([states, actor(states)], dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    actor.eval()
    state = {name: tensor.detach().clone().contiguous() for name, tensor in actor.state_dict().items()}
    save_file(state, str(directory / "cleanrl_actor.safetensors"))
    torch.save(state, directory / "cleanrl_actor.pt")

    def predict(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    return {
        "cleanrl": Trained("cleanrl", directory / "cleanrl_actor.safetensors", predict, origin_prefix="cleanrl"),
        "cleanrl_torch": Trained("cleanrl_torch", directory / "cleanrl_actor.pt", predict, origin_prefix="cleanrl"),
    }


@pytest.fixture(scope="session")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """Every policy trained elsewhere by name: td3, sac, ppo, ppo_normalized, cleanrl, cleanrl_torch."""
    pytest.importorskip("stable_baselines3")
    directory = tmp_path_factory.mktemp("foreign")
    return {**_sb3(directory), **_cleanrl(directory)}
