"""trainer.adam.FusedAdam makes the update torch.optim.Adam(fused=True) makes, bit for bit."""

from __future__ import annotations

import pytest
import torch

from models.networks import Actor, Critic
from trainer.adam import FusedAdam


def _twin_critics(seed: int) -> tuple[Critic, Critic]:
    torch.manual_seed(seed)
    first = Critic(3, 1, 32)
    second = Critic(3, 1, 32)
    second.load_state_dict(first.state_dict())
    return first, second


@pytest.mark.parametrize("lr", [1e-3, 3e-2])
def test_many_steps_give_the_same_parameters_and_moments_as_torch_optim(lr: float) -> None:
    ours_net, torch_net = _twin_critics(0)
    ours = FusedAdam(ours_net.parameters(), lr)
    reference = torch.optim.Adam(torch_net.parameters(), lr=lr, fused=True)
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        obs, act = torch.randn(16, 3, generator=generator), torch.randn(16, 1, generator=generator)
        target = torch.randn(16, 1, generator=generator)
        for net, optimizer in ((ours_net, ours), (torch_net, reference)):
            loss = torch.nn.functional.mse_loss(net(obs, act), target)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    for mine, theirs in zip(ours_net.parameters(), torch_net.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    for index, moments in enumerate(ours.moments):
        state = reference.state_dict()["state"][index]
        assert torch.equal(moments.exp_avg, state["exp_avg"]) and torch.equal(moments.exp_avg_sq, state["exp_avg_sq"])
        assert float(moments.step) == float(state["step"]) == 200


def test_parameters_without_a_gradient_are_left_alone() -> None:
    torch.manual_seed(0)
    actor = Actor(3, 8, 1)
    optimizer = FusedAdam(actor.parameters(), 1e-2)
    before = [param.detach().clone() for param in actor.parameters()]
    optimizer.step()  # no backward yet: nothing has a gradient
    assert all(torch.equal(a, b) for a, b in zip(before, actor.parameters(), strict=True))
    first = next(actor.parameters())
    first.grad = torch.ones_like(first)
    optimizer.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, actor.parameters(), strict=True)]
    assert changed[0] and not any(changed[1:])
    assert [float(m.step) for m in optimizer.moments] == [1.0] + [0.0] * (len(before) - 1)


def test_restored_moments_must_fit() -> None:
    optimizer = FusedAdam(Actor(3, 8, 1).parameters(), 1e-3)
    with pytest.raises(ValueError, match="exp_avg of parameter 0 has shape"):
        optimizer.load_moments(0, exp_avg=torch.zeros(2), exp_avg_sq=torch.zeros(2), step=1.0)
    with pytest.raises(ValueError, match="no parameter 99"):
        optimizer.load_moments(99, exp_avg=torch.zeros(2), exp_avg_sq=torch.zeros(2), step=1.0)
