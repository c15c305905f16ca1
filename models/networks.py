"""The seed tutorial's Actor and Critic: three linear layers each, hidden width configurable.

The layer names (`linear1`..`linear3`) are part of the weights-file contract, so keep them.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class Actor(nn.Module):
    """Deterministic policy mu(s): relu, relu, tanh. Outputs lie in [-1, 1]; the env scale is applied outside."""

    def __init__(self, obs_dim: int, hidden_size: int, act_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(obs_dim, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, act_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.linear1(state))
        x = F.relu(self.linear2(x))
        return torch.tanh(self.linear3(x))


class Critic(nn.Module):
    """Q(s, a): the state and the (tanh-space) action concatenated, one Q value out."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(obs_dim + act_dim, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state, action], dim=1)
        x = F.relu(self.linear1(x))
        x = F.relu(self.linear2(x))
        return cast(torch.Tensor, self.linear3(x))
