"""The DDPG update: a deterministic actor, a Q critic, their two target networks and soft updates.

Read `DDPGAgent.update` top to bottom; each step says where DDPG differs from TD3. The agent works in
the actor's [-1, 1] action space throughout; scaling to the environment's bounds happens in the loop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from models.networks import Actor, Critic
from models.training_config import TrainingConfig
from trainer.adam import FusedAdam
from trainer.replay_buffer import ReplaySamples

FloatArray = npt.NDArray[np.float32]


def polyak_update(params: Iterable[torch.Tensor], target_params: Iterable[torch.Tensor], tau: float) -> None:
    """Soft update theta' <- tau * theta + (1 - tau) * theta', in place (lerp is exactly that, in one op)."""
    with torch.no_grad():
        for param, target in zip(params, target_params, strict=True):
            target.lerp_(param, tau)


def bellman_target(rewards: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q'(s', mu'(s')).

    Only true termination stops the bootstrap. A time-limit truncation is stored with terminated = 0:
    the state after it still has a future, so cutting the target there would teach the critic that
    the 200th step of Pendulum is the end of the world.
    """
    return rewards + gamma * (1.0 - terminated) * next_q


class DDPGAgent:
    """Actor, critic, their targets and optimizers; `act` for rollouts and `update` for one gradient step."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        hidden_size: int,
        actor_lr: float,
        critic_lr: float,
        gamma: float,
        tau: float,
    ) -> None:
        self.gamma = gamma
        self.tau = tau
        # Actor first, then critic: the construction order fixes which random numbers initialise which
        # network, so it is part of "same seed, same weights".
        self.actor = Actor(obs_dim, hidden_size, act_dim)
        self.critic = Critic(obs_dim, act_dim, hidden_size)
        # Targets start as exact copies and only ever move by polyak averaging, never by gradients.
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # Adam's fused kernel, without torch.optim (trainer/adam.py says why).
        self.actor_optimizer = FusedAdam(self.actor.parameters(), actor_lr)
        self.critic_optimizer = FusedAdam(self.critic.parameters(), critic_lr)
        # Parameter lists fetched once: `.parameters()` is a generator walk on every call.
        self._actor_params = list(self.actor.parameters())
        self._critic_params = list(self.critic.parameters())
        self._actor_target_params = list(self.actor_target.parameters())
        self._critic_target_params = list(self.critic_target.parameters())

    @classmethod
    def from_config(cls, config: TrainingConfig, obs_dim: int, act_dim: int) -> DDPGAgent:
        return cls(
            obs_dim,
            act_dim,
            hidden_size=config.hidden_size,
            actor_lr=config.actor_lr,
            critic_lr=config.critic_lr,
            gamma=config.gamma,
            tau=config.tau,
        )

    def act(self, observation: npt.ArrayLike) -> FloatArray:
        """mu(s) in [-1, 1] for one observation, without noise (the loop adds it)."""
        obs = torch.from_numpy(np.asarray(observation, dtype=np.float32).reshape(1, -1))
        # inference_mode skips autograd bookkeeping entirely: acting is on the per-step hot path.
        with torch.inference_mode():
            action: FloatArray = self.actor(obs).numpy()[0]
        return action

    def update(self, batch: ReplaySamples) -> None:
        """One DDPG gradient step on a sampled batch: critic, then actor, then both targets.

        Nothing here calls `.item()` or otherwise reads a loss back: the hot loop never needs the
        numbers, and every read-back is extra work per step.
        """
        # torch.from_numpy shares the sampled arrays' memory: no copy per update.
        obs = torch.from_numpy(batch.observations)
        actions = torch.from_numpy(batch.actions)
        rewards = torch.from_numpy(batch.rewards)
        next_obs = torch.from_numpy(batch.next_observations)
        terminated = torch.from_numpy(batch.terminated)

        # 1. Bellman target from the *target* networks (the tutorial's y_i). DDPG uses the target actor's
        #    action as is; TD3 would add clipped "target policy smoothing" noise to it and take the
        #    minimum of two target critics to fight overestimation.
        with torch.no_grad():
            next_q = self.critic_target(next_obs, self.actor_target(next_obs))
            target_q = bellman_target(rewards, next_q, terminated, self.gamma)

        # 2. Critic: mean squared error between Q(s, a) and the fixed target (one critic; TD3 has two).
        critic_loss = F.mse_loss(self.critic(obs, actions), target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        self.critic_optimizer.step()

        # 3. Actor: maximise Q(s, mu(s)) through the freshly updated critic, i.e. minimise -Q.
        #    DDPG does this every update; TD3 delays it to every second critic update.
        #    The critic's weights are frozen for this pass so backward computes only what the actor needs.
        for param in self._critic_params:
            param.requires_grad_(False)
        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        for param in self._critic_params:
            param.requires_grad_(True)

        # 4. Soft target updates after every update (TD3 again only every second one).
        polyak_update(self._critic_params, self._critic_target_params, self.tau)
        polyak_update(self._actor_params, self._actor_target_params, self.tau)

    def actor_state(self) -> dict[str, FloatArray]:
        """A detached numpy copy of the actor's weights (the exported tensors), safe to keep as a snapshot."""
        return {name: tensor.detach().numpy().copy() for name, tensor in self.actor.state_dict().items()}
