"""Adam for the DDPG networks: the update `torch.optim.Adam(params, lr, fused=True)` makes, bit for bit, without
`torch.optim`.

Why not `torch.optim.Adam` itself: its constructor and every `step()` import `torch._dynamo` (the compiler stack,
for graph breaks this eager loop never needs), which costs every training process 1 to 1.7 s of CPU before its
first update: a queued job, a sweep trial, a learner or a CLI run each paid it. The update itself is the same
kernel: `torch._fused_adam_` (the fused CPU Adam of torch 2.4+) after the same per-parameter step increment, with
the state initialised as torch initialises it (zero moments, a float32 step per parameter). tests/trainer/test_adam.py
checks that both give identical parameters over many steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(slots=True)
class AdamMoments:
    """One parameter's optimiser state: the first and second moments and the number of steps taken."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: torch.Tensor  # float32 scalar, as torch keeps it for the fused kernel


class FusedAdam:
    """Adam (no weight decay, no amsgrad) over a fixed list of parameters, one fused kernel call per step."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam needs at least one parameter")
        self.lr = lr
        self.moments = [
            AdamMoments(
                exp_avg=torch.zeros_like(param, memory_format=torch.preserve_format),
                exp_avg_sq=torch.zeros_like(param, memory_format=torch.preserve_format),
                step=torch.zeros((), dtype=torch.float32),
            )
            for param in self.params
        ]

    def load_moments(self, index: int, *, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: float) -> None:
        """Restore parameter `index`'s state (a learner's checkpoint); a shape that does not fit is a ValueError."""
        if not 0 <= index < len(self.params):
            raise ValueError(f"no parameter {index}: this optimiser has {len(self.params)}")
        moments = self.moments[index]
        for name, saved, own in (("exp_avg", exp_avg, moments.exp_avg), ("exp_avg_sq", exp_avg_sq, moments.exp_avg_sq)):
            if saved.shape != own.shape:
                raise ValueError(f"{name} of parameter {index} has shape {tuple(saved.shape)}, not {tuple(own.shape)}")
        with torch.no_grad():
            moments.exp_avg.copy_(exp_avg)
            moments.exp_avg_sq.copy_(exp_avg_sq)
            moments.step.fill_(step)

    def zero_grad(self) -> None:
        """Drop the gradients (as `zero_grad(set_to_none=True)`): the next backward writes fresh ones."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step for every parameter that has a gradient (as torch skips those without)."""
        with_grad = [index for index, param in enumerate(self.params) if param.grad is not None]
        if not with_grad:
            return
        params: list[torch.Tensor] = [self.params[index] for index in with_grad]
        grads = [param.grad for param in params if param.grad is not None]
        moments = [self.moments[index] for index in with_grad]
        steps = [m.step for m in moments]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params,
            grads,
            [m.exp_avg for m in moments],
            [m.exp_avg_sq for m in moments],
            [],
            steps,
            amsgrad=False,
            lr=self.lr,
            beta1=BETAS[0],
            beta2=BETAS[1],
            weight_decay=0.0,
            eps=EPS,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
