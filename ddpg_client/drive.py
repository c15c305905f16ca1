"""Drive an environment that lives here with the service's policy, over `WS /act/stream`: every step sends the
observation, the previous step's reward and how the episode ended (terminated: `done`, cut short: `truncated`), so
the service records exact transitions and an online learner (PUT /models/{name}/learner) learns from them.

    with PolicyClient(url) as client:
        episodes = client.drive(MyEnv(), model="arm", episodes=100)
        episodes = client.drive("Pendulum-v1", model="pendulum", episodes=10)   # an id gymnasium can make

The environment is any gymnasium-style object (`reset(seed=...)` -> (obs, info), `step(action)` -> (obs, reward,
terminated, truncated, info)) or an id: a registered gymnasium id (`module:Env-v0` imports `module` first), or
`package.module:Factory`, a class or function that returns one. One stream is one session: the service never
switches the policy within an episode. Needs the `stream` extra (websockets), and gymnasium only to make an id.

`max_lag` is the backpressure: a client that records faster than the model's learner can learn waits between
episodes while the learner (GET /models/{name}/learner, `unlearned_transitions`) has more than `max_lag` recorded
transitions it has not run their updates for. The learner then keeps its update-to-data ratio while its clients run
as fast as it learns, instead of their episodes piling up unlearned (with a policy that does not improve meanwhile).
It waits only on a running learner: a queued one (no learner process yet), a stopped one or none at all never blocks.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ddpg_client.clients import PolicyClient

logger = logging.getLogger("ddpg_client")

# Seconds between looks at the learner while waiting for it, at least and at most (the learner writes its counters
# four times a second).
LAG_POLL_SECONDS = 0.05
MAX_LAG_POLL_SECONDS = 0.5


class Environment(Protocol):
    def reset(self, *, seed: int | None = None) -> tuple[Any, Any]: ...

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, Any]: ...


@dataclass(frozen=True)
class DrivenEpisode:
    """One episode driven: its number, return, length, how it ended, and the policies that acted (-1: warm-up)."""

    episode: int
    episode_return: float
    steps: int
    terminated: bool
    policy_ids: frozenset[int]


def make_environment(env: Environment | str) -> Environment:
    """The environment itself, or the one an id names (see the module docstring); ValueError saying why not."""
    if not isinstance(env, str):
        return env
    import gymnasium as gym

    try:
        made: Environment = gym.make(env)
        return made
    except (gym.error.Error, ImportError) as exc:  # `module:Env-v0` imports module first
        module_name, _, attribute = env.partition(":")
        if not attribute:
            raise ValueError(f"cannot make environment {env!r}: {exc}") from None
    try:
        factory: Callable[[], Environment] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot make environment {env!r}: {exc}") from None
    return factory()


def drive_episodes(
    client: PolicyClient,
    env: Environment | str,
    *,
    model: str,
    episodes: int,
    seed: int | None = None,
    max_steps: int | None = None,
    max_lag: int | None = None,
) -> Iterator[DrivenEpisode]:
    """Run `episodes` episodes on the service's actions; yields each as it ends. Episode i resets with `seed + i`
    (unseeded without `seed`); `max_steps` cuts an episode short (`truncated`) if the environment has not;
    `max_lag` waits before an episode while the model's learner is further behind than that (module docstring)."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if max_lag is not None and max_lag < 0:
        raise ValueError(f"max_lag must be at least 0, got {max_lag}")
    environment = make_environment(env)
    with client.stream(model=model) as stream:
        for index in range(episodes):
            if max_lag is not None and index > 0:
                wait_for_learner(client, model, max_lag)
            observation, _info = environment.reset(seed=None if seed is None else seed + index)
            result = stream.act(np.asarray(observation, dtype=np.float32))
            total, steps, used = 0.0, 0, {result.policy_id}
            while True:
                observation, reward, terminated, truncated, _info = environment.step(
                    np.asarray(result.action, dtype=np.float32)
                )
                steps += 1
                total += float(reward)
                truncated = bool(truncated) or (max_steps is not None and steps >= max_steps)
                obs = np.asarray(observation, dtype=np.float32)
                if terminated or truncated:
                    # The episode's end: its reward and how it ended (terminated wins over truncated), no next action.
                    stream.act(obs, reward=float(reward), done=bool(terminated), truncated=not terminated)
                    break
                result = stream.act(obs, reward=float(reward))
                used.add(result.policy_id)
            yield DrivenEpisode(index, total, steps, bool(terminated), frozenset(used))


def wait_for_learner(client: PolicyClient, model: str, max_lag: int) -> float:
    """Wait while the model's running learner has more than `max_lag` unlearned transitions; the seconds waited."""
    from ddpg_client.errors import NotFoundError

    started = time.monotonic()
    while True:
        try:
            state = client.learner(model)
        except NotFoundError:
            return time.monotonic() - started  # no learner: nothing to wait for
        excess = int(state.get("unlearned_transitions", 0)) - max_lag
        if state.get("status") != "running" or excess <= 0:
            return time.monotonic() - started
        # Sleep about as long as the learner needs for the excess at its recent rate (fewer looks, each of which
        # costs the service a few queries), but look again soon if it has no rate yet or is slow.
        rate = state.get("updates_per_second") or 0.0
        time.sleep(min(max(excess / rate if rate > 0 else 0.0, LAG_POLL_SECONDS), MAX_LAG_POLL_SECONDS))


def drive(
    client: PolicyClient,
    env: Environment | str,
    *,
    model: str,
    episodes: int,
    seed: int | None = None,
    max_steps: int | None = None,
    progress: bool | None = None,
    max_lag: int | None = None,
) -> list[DrivenEpisode]:
    """`drive_episodes` to the end, with a progress bar of the episode returns (on a terminal by default, with tqdm
    when it is installed; else one log line per episode). `max_lag`: see the module docstring."""
    show = sys.stderr.isatty() if progress is None else progress
    results: list[DrivenEpisode] = []
    bar = _progress_bar(episodes) if show else None
    try:
        for outcome in drive_episodes(
            client, env, model=model, episodes=episodes, seed=seed, max_steps=max_steps, max_lag=max_lag
        ):
            results.append(outcome)
            recent = [r.episode_return for r in results[-10:]]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ret=f"{outcome.episode_return:.1f}", mean10=f"{np.mean(recent):.1f}")
            else:
                logger.info(
                    "episode %d return %.2f (mean of the last %d %.2f)",
                    outcome.episode,
                    outcome.episode_return,
                    len(recent),
                    float(np.mean(recent)),
                )
    finally:
        if bar is not None:
            bar.close()
    return results


def _progress_bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(total)
    return tqdm(total=total, unit="ep", dynamic_ncols=True)


class _TextBar:
    """A one-line bar on stderr where tqdm is not installed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.postfix = ""

    def update(self, count: int) -> None:
        self.done += count

    def set_postfix(self, **values: str) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.postfix}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
