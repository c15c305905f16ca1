"""episodes.run_episodes: the one episode loop (seeded, time-limited, hooked, batched or one at a time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from episodes import EpisodeResult, Step, iter_episodes, run_episodes

REPO_ROOT = Path(__file__).resolve().parents[2]
SHORT = 30


def swing(observation: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A deterministic Pendulum controller, row by row, so one observation and a batch give the same actions."""
    observation = np.asarray(observation, dtype=np.float32)
    action = np.clip(-2.0 * observation[..., 1:2] - 0.5 * observation[..., 2:3], -2.0, 2.0)
    return action.astype(np.float32)


def test_same_seeds_same_returns_and_other_seeds_differ() -> None:
    first = run_episodes(swing, "Pendulum-v1", [3, 4], max_steps=SHORT)
    again = run_episodes(swing, "Pendulum-v1", [3, 4], max_steps=SHORT)
    assert first == again
    assert [r.seed for r in first] == [3, 4]
    assert first[0].episode_return != first[1].episode_return
    assert run_episodes(swing, "Pendulum-v1", [5], max_steps=SHORT)[0] != first[0]
    assert all(r.episode_return < 0 for r in first)  # Pendulum's reward is never positive


def test_batched_lockstep_matches_one_episode_at_a_time() -> None:
    seeds = [0, 1, 2]
    one_at_a_time = run_episodes(swing, "Pendulum-v1", seeds, max_steps=SHORT)
    calls: list[tuple[int, ...]] = []

    def batch_policy(observations: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        calls.append(observations.shape)
        return swing(observations)

    lockstep = run_episodes(batch_policy, "Pendulum-v1", seeds, max_steps=SHORT, batched=True)
    assert lockstep == one_at_a_time
    # One call per time step for all three episodes, not one per environment step.
    assert calls == [(3, 3)] * SHORT


def test_max_steps_and_the_environments_own_time_limit() -> None:
    (short,) = run_episodes(swing, "Pendulum-v1", [0], max_steps=7)
    assert short == EpisodeResult(seed=0, episode_return=short.episode_return, steps=7)
    (full,) = run_episodes(swing, "Pendulum-v1", [0])
    assert full.steps == 200  # Pendulum-v1's own limit


def test_on_step_is_called_once_per_step_and_on_reset_once_per_episode() -> None:
    steps: list[Step] = []
    resets: list[Step] = []
    results = run_episodes(swing, "Pendulum-v1", [8, 9], max_steps=5, on_step=steps.append, on_reset=resets.append)
    assert [(s.index, s.seed, s.step) for s in resets] == [(0, 8, 0), (1, 9, 0)]
    assert len(steps) == sum(r.steps for r in results) == 10
    for index, result in enumerate(results):
        mine = [s for s in steps if s.index == index]
        assert [s.step for s in mine] == [1, 2, 3, 4, 5]
        assert [s.done for s in mine] == [False] * 4 + [True]
        assert {s.seed for s in mine} == {result.seed}
        assert mine[-1].episode_return == result.episode_return
        assert sum(s.reward for s in mine) == pytest.approx(result.episode_return)


def test_on_step_can_render_the_environment() -> None:
    frames: list[tuple[int, ...]] = []
    run_episodes(
        swing,
        "Pendulum-v1",
        [0],
        max_steps=3,
        on_step=lambda step: frames.append(np.asarray(step.env.render()).shape),
        render_mode="rgb_array",
    )
    assert frames == [(500, 500, 3)] * 3


def test_results_stream_one_episode_at_a_time() -> None:
    actions_taken: list[int] = []

    def counting(observation: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        actions_taken.append(1)
        return swing(observation)

    episodes = iter_episodes(counting, "Pendulum-v1", [0, 1, 2], max_steps=4)
    first = next(episodes)
    assert first.seed == 0 and len(actions_taken) == 4  # the second episode has not started yet
    assert [r.seed for r in episodes] == [1, 2]


def test_no_seeds_no_episodes() -> None:
    assert run_episodes(swing, "Pendulum-v1", []) == []


def test_dimension_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as caught:
        run_episodes(swing, "Pendulum-v1", [0], obs_dim=4, act_dim=1)
    assert str(caught.value) == (
        "policy has obs_dim=4, act_dim=1 but Pendulum-v1 has observation shape (3,) and action shape (1,)"
    )
    with pytest.raises(ValueError, match="act_dim=2"):
        run_episodes(swing, "Pendulum-v1", [0], obs_dim=3, act_dim=2)


def test_a_policy_returning_the_wrong_action_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"policy returned actions of shape \(2,\) but Pendulum-v1 needs shape \(1,\)"):
        run_episodes(lambda _obs: np.zeros(2, np.float32), "Pendulum-v1", [0], max_steps=3)
    with pytest.raises(ValueError, match=r"shape \(2, 2\) but Pendulum-v1 needs shape \(2, 1\)"):
        run_episodes(lambda obs: np.zeros((len(obs), 2)), "Pendulum-v1", [0, 1], max_steps=3, batched=True)


@pytest.mark.parametrize(
    ("env_id", "max_steps", "message"),
    [
        ("Pendulum-v1", 0, "max_steps must be at least 1, got 0"),
        ("NoSuchEnv-v0", None, "cannot make environment 'NoSuchEnv-v0'"),
        ("CartPole-v1", None, "flat continuous"),
    ],
)
def test_bad_environments_are_value_errors(env_id: str, max_steps: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_episodes(swing, env_id, [0], max_steps=max_steps)


def test_importing_episodes_loads_no_environment_and_nothing_of_ours() -> None:
    script = (
        "import sys, episodes\n"
        "ours = ('app', 'trainer', 'models', 'store', 'ddpg_client', 'gymnasium', 'torch')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ours)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
