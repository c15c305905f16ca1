import numpy as np
import pytest
import torch

from trainer.agent import DDPGAgent, bellman_target, polyak_update
from trainer.replay_buffer import ReplayBuffer


def test_polyak_update_moves_targets_by_tau() -> None:
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[10.0]])]
    targets = [torch.tensor([0.0, 0.0]), torch.tensor([[0.0]])]
    polyak_update(params, targets, tau=0.1)
    torch.testing.assert_close(targets[0], torch.tensor([0.1, 0.2]))
    torch.testing.assert_close(targets[1], torch.tensor([[1.0]]))
    polyak_update(params, targets, tau=0.1)  # 0.1 * p + 0.9 * (0.1 p) = 0.19 p
    torch.testing.assert_close(targets[0], torch.tensor([0.19, 0.38]))
    torch.testing.assert_close(params[0], torch.tensor([1.0, 2.0]))  # sources untouched


def test_polyak_update_with_tau_one_copies() -> None:
    params = [torch.randn(3, 4)]
    targets = [torch.zeros(3, 4)]
    polyak_update(params, targets, tau=1.0)
    torch.testing.assert_close(targets[0], params[0])


def test_bellman_target_bootstraps_unless_terminated() -> None:
    rewards = torch.tensor([[-1.0], [-1.0]])
    next_q = torch.tensor([[-10.0], [-10.0]])
    terminated = torch.tensor([[0.0], [1.0]])
    target = bellman_target(rewards, next_q, terminated, gamma=0.9)
    torch.testing.assert_close(target, torch.tensor([[-1.0 - 9.0], [-1.0]]))


def test_truncated_transitions_are_stored_as_bootstrapping() -> None:
    """The loop stores gymnasium's `terminated` only: a time-limit truncation still bootstraps."""
    buffer = ReplayBuffer(4, obs_dim=1, act_dim=1)
    buffer.add([0.0], [0.0], -1.0, [1.0], terminated=False)  # truncated at the time limit
    buffer.add([1.0], [0.0], -1.0, [2.0], terminated=True)  # a real terminal state
    next_q = torch.tensor([[-10.0], [-10.0]])
    target = bellman_target(
        torch.from_numpy(buffer.rewards[:2]), next_q, torch.from_numpy(buffer.terminated[:2]), gamma=0.5
    )
    torch.testing.assert_close(target, torch.tensor([[-6.0], [-1.0]]))


def _agent(seed: int = 0, tau: float = 0.01) -> DDPGAgent:
    torch.manual_seed(seed)
    return DDPGAgent(3, 2, hidden_size=16, actor_lr=1e-3, critic_lr=1e-3, gamma=0.9, tau=tau)


def _batch(rng: np.random.Generator, terminated: float) -> ReplayBuffer:
    buffer = ReplayBuffer(64, obs_dim=3, act_dim=2)
    for _ in range(64):
        obs = rng.standard_normal(3)
        # A smooth reward (a function of the state) so that a small critic can fit the target.
        buffer.add(obs, rng.uniform(-1, 1, 2), float(obs[0] - obs[1]), rng.standard_normal(3), bool(terminated))
    return buffer


def test_update_fits_the_critic_to_the_bellman_target_of_the_target_networks() -> None:
    """With tau tiny the targets barely move, so repeated updates drive Q(s, a) to r + gamma Q'(s', mu'(s'))."""
    agent = _agent(tau=1e-8)
    rng = np.random.default_rng(0)
    buffer = _batch(rng, terminated=0.0)
    batch = buffer.sample(64, rng)
    obs, act, rew, nxt, term = (torch.from_numpy(a) for a in batch)
    with torch.no_grad():
        expected = bellman_target(rew, agent.critic_target(nxt, agent.actor_target(nxt)), term, agent.gamma)
        before = torch.mean((agent.critic(obs, act) - expected) ** 2).item()
    for _ in range(300):
        agent.update(batch)
    with torch.no_grad():
        after = torch.mean((agent.critic(obs, act) - expected) ** 2).item()
    assert after < before * 0.2


def test_actor_update_climbs_the_critic() -> None:
    """The actor loss is -Q(s, mu(s)): after updates Q(s, mu(s)) is higher for the same critic."""
    agent = _agent()
    rng = np.random.default_rng(1)
    batch = _batch(rng, terminated=1.0).sample(64, rng)
    obs = torch.from_numpy(batch.observations)
    for _ in range(5):
        agent.update(batch)
    critic_snapshot = [p.detach().clone() for p in agent.critic.parameters()]
    with torch.no_grad():
        q_before = agent.critic(obs, agent.actor(obs)).mean().item()
    # Actor-only steps against the frozen snapshot critic.
    for _ in range(50):
        loss = -agent.critic(obs, agent.actor(obs)).mean()
        agent.actor_optimizer.zero_grad()
        loss.backward()
        agent.actor_optimizer.step()
    for p, snap in zip(agent.critic.parameters(), critic_snapshot, strict=True):
        p.data.copy_(snap)
    with torch.no_grad():
        q_after = agent.critic(obs, agent.actor(obs)).mean().item()
    assert q_after > q_before


def test_update_changes_online_nets_and_moves_targets_only_by_tau() -> None:
    agent = _agent(tau=0.25)
    rng = np.random.default_rng(2)
    batch = _batch(rng, terminated=0.0).sample(32, rng)
    target_before = [p.detach().clone() for p in agent.critic_target.parameters()]
    agent.update(batch)
    for online, target, before in zip(
        agent.critic.parameters(), agent.critic_target.parameters(), target_before, strict=True
    ):
        torch.testing.assert_close(target, 0.25 * online.detach() + 0.75 * before)
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert all(p.requires_grad for p in agent.critic.parameters())  # unfrozen after the actor step
    assert not any(p.requires_grad for p in agent.critic_target.parameters())


def test_act_is_in_unit_range_and_shaped_like_the_action() -> None:
    agent = _agent()
    action = agent.act(np.array([100.0, -100.0, 3.0], dtype=np.float32))
    assert action.shape == (2,)
    assert np.all(np.abs(action) <= 1.0)


@pytest.mark.parametrize("terminated", [0.0, 1.0])
def test_update_is_deterministic_for_a_seed(terminated: float) -> None:
    results = []
    for _ in range(2):
        agent = _agent(seed=3)
        rng = np.random.default_rng(3)
        buffer = _batch(rng, terminated)
        for _ in range(5):
            agent.update(buffer.sample(16, rng))
        results.append(agent.actor_state())
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])
