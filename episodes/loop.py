"""The episode loop: a policy acts in a gymnasium environment from seeded resets until each episode ends.

`policy` maps one observation (a float32 array of length obs_dim) to one action. With `batched=True` it maps
a (n, obs_dim) batch to (n, act_dim) actions instead, and the episodes run in lockstep, one environment
each, so the policy is called once per time step rather than once per environment step: for a numpy actor
that saves most of an evaluation's cost. Without it the episodes run one after another on one environment,
and `iter_episodes` yields each result as soon as its episode ends.

Episodes are deterministic for a deterministic policy: each starts from `env.reset(seed=seed)`, which reseeds
the environment completely, so the same seeds give the same returns in either mode of a given policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from gymnasium import Env

FloatArray = npt.NDArray[np.float32]
# One observation -> one action, or (batched=True) a batch of observations -> a batch of actions.
Policy = Callable[[FloatArray], npt.ArrayLike]


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: the seed its environment was reset with, its undiscounted return, its length."""

    seed: int
    episode_return: float
    steps: int


@dataclass(frozen=True)
class Step:
    """What a hook sees: one episode's state right after a reset (step 0) or after an environment step.

    `index` is the episode's position in `seeds`; `env` is its environment (e.g. to call `env.render()`).
    """

    index: int
    seed: int
    step: int
    reward: float
    episode_return: float
    done: bool
    env: Env[Any, Any]


StepHook = Callable[[Step], None]


def make_env(env_id: str, *, max_steps: int | None = None, render_mode: str | None = None) -> Env[Any, Any]:
    """`gymnasium.make` with an optional time limit and render mode; ValueError (not gymnasium's) when it fails."""
    import gymnasium as gym

    if not env_id:  # a policy of a model created from its spaces: its environment lives with the clients
        raise ValueError("the policy names no environment (its model's environment lives with its clients)")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    kwargs: dict[str, Any] = {}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if max_steps is not None:
        kwargs["max_episode_steps"] = max_steps
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise ValueError(f"cannot make environment {env_id!r}: {exc}") from None


def check_spaces(env: Env[Any, Any], env_id: str, *, obs_dim: int | None = None, act_dim: int | None = None) -> int:
    """Check that `env` has flat observations and flat continuous actions (of the policy's sizes, when known).

    Returns the environment's action size.
    """
    import gymnasium as gym

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"{env_id}: a policy here needs a flat Box observation space, got {obs_space}")
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise ValueError(f"{env_id}: a policy here needs a flat continuous (Box) action space, got {act_space}")
    known_obs = obs_dim if obs_dim is not None else obs_space.shape[0]
    known_act = act_dim if act_dim is not None else act_space.shape[0]
    if obs_space.shape != (known_obs,) or act_space.shape != (known_act,):
        raise ValueError(
            f"policy has obs_dim={obs_dim}, act_dim={act_dim} but {env_id} has "
            f"observation shape {obs_space.shape} and action shape {act_space.shape}"
        )
    return int(act_space.shape[0])


def iter_episodes(
    policy: Policy,
    env_id: str,
    seeds: Iterable[int],
    max_steps: int | None = None,
    on_step: StepHook | None = None,
    *,
    on_reset: StepHook | None = None,
    batched: bool = False,
    render_mode: str | None = None,
    obs_dim: int | None = None,
    act_dim: int | None = None,
) -> Iterator[EpisodeResult]:
    """Run one episode per seed and yield each result (in `seeds` order) as soon as it is known.

    `max_steps` overrides the environment's time limit; `on_reset` is called once per episode right after
    its reset, `on_step` once per environment step; `render_mode` is passed to `gymnasium.make`; `obs_dim`
    and `act_dim`, when given, are checked against the environment before anything runs. The environments
    are closed when the iteration ends, however it ends.
    """
    seed_list = [int(seed) for seed in seeds]
    if not seed_list:
        return
    width = len(seed_list) if batched else 1
    envs = [make_env(env_id, max_steps=max_steps, render_mode=render_mode)]
    try:
        env_act_dim = check_spaces(envs[0], env_id, obs_dim=obs_dim, act_dim=act_dim)
        envs += [make_env(env_id, max_steps=max_steps, render_mode=render_mode) for _ in range(width - 1)]
        for start in range(0, len(seed_list), width):
            yield from _run_lockstep(
                policy,
                envs,
                seed_list[start : start + width],
                first_index=start,
                batched=batched,
                env_id=env_id,
                act_dim=env_act_dim,
                on_reset=on_reset,
                on_step=on_step,
            )
    finally:
        for env in envs:
            env.close()


def run_episodes(
    policy: Policy,
    env_id: str,
    seeds: Iterable[int],
    max_steps: int | None = None,
    on_step: StepHook | None = None,
    *,
    on_reset: StepHook | None = None,
    batched: bool = False,
    render_mode: str | None = None,
    obs_dim: int | None = None,
    act_dim: int | None = None,
) -> list[EpisodeResult]:
    """Run one episode per seed; the results in `seeds` order (see `iter_episodes` for the arguments)."""
    return list(
        iter_episodes(
            policy,
            env_id,
            seeds,
            max_steps,
            on_step,
            on_reset=on_reset,
            batched=batched,
            render_mode=render_mode,
            obs_dim=obs_dim,
            act_dim=act_dim,
        )
    )


def _run_lockstep(
    policy: Policy,
    envs: Sequence[Env[Any, Any]],
    seeds: Sequence[int],
    *,
    first_index: int,
    batched: bool,
    env_id: str,
    act_dim: int,
    on_reset: StepHook | None,
    on_step: StepHook | None,
) -> Iterator[EpisodeResult]:
    """The episodes of `seeds` side by side, env i running seed i, until every one has ended."""
    observations = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]).astype(np.float32)
    if on_reset is not None:
        for i, seed in enumerate(seeds):
            on_reset(Step(first_index + i, seed, 0, 0.0, 0.0, False, envs[i]))
    returns = [0.0] * len(seeds)
    steps = [0] * len(seeds)
    active = list(range(len(seeds)))
    while active:
        actions = _actions(policy, observations[active], batched, env_id, act_dim)
        still_active: list[int] = []
        for row, i in enumerate(active):
            obs, reward, terminated, truncated, _ = envs[i].step(actions[row])
            returns[i] += float(reward)
            steps[i] += 1
            observations[i] = obs
            done = bool(terminated or truncated)
            if on_step is not None:
                on_step(Step(first_index + i, seeds[i], steps[i], float(reward), returns[i], done, envs[i]))
            if not done:
                still_active.append(i)
        active = still_active
    for i, seed in enumerate(seeds):
        yield EpisodeResult(seed=seed, episode_return=returns[i], steps=steps[i])


def _actions(policy: Policy, observations: FloatArray, batched: bool, env_id: str, act_dim: int) -> FloatArray:
    """The policy's actions for these observations as a (n, act_dim) float32 array, or ValueError saying why not."""
    if batched:
        actions = np.asarray(policy(observations), dtype=np.float32)
    else:
        actions = np.stack([np.asarray(policy(observation), dtype=np.float32) for observation in observations])
    expected = (len(observations), act_dim)
    if actions.shape != expected:
        got = actions.shape if batched else actions.shape[1:]
        want = expected if batched else expected[1:]
        raise ValueError(f"policy returned actions of shape {got} but {env_id} needs shape {want}")
    return actions
