"""Whole episodes of a policy in a gymnasium environment: the one episode loop the trainer's evaluation, the
rollout GIFs and the client's `rollout` command share.

A leaf package: numpy, and gymnasium imported only when an episode runs; it imports nothing of this project,
so every other package (the torch-free `models` layer and the standalone client included) may use it.

    results = run_episodes(actor.act, "Pendulum-v1", seeds=[0, 1, 2])
    [r.episode_return for r in results]
"""

from episodes.loop import (
    EpisodeResult,
    Policy,
    Step,
    StepHook,
    check_spaces,
    iter_episodes,
    make_env,
    run_episodes,
)

__all__ = [
    "EpisodeResult",
    "Policy",
    "Step",
    "StepHook",
    "check_spaces",
    "iter_episodes",
    "make_env",
    "run_episodes",
]
