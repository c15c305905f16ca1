"""The training loop end to end, in-process: history, callback, determinism, export, and that it learns."""

import numpy as np
import pytest

from models.policy import NumpyActor
from models.training_config import make_config
from models.weights import decode_actor
from trainer.agent import DDPGAgent
from trainer.env import env_spec, make_env
from trainer.evaluation import evaluate_policy
from trainer.export import export_actor
from trainer.records import EpisodeRecord, EvaluationRecord
from trainer.seeding import seed_everything
from trainer.training import train

# Small and short: a few hundred updates of a tiny network.
TINY = {
    "episodes": 3,
    "max_episode_steps": 60,
    "hidden_size": 16,
    "batch_size": 32,
    "learning_starts": 40,
    "random_steps": 30,
    "eval_every": 2,
    "eval_episodes": 2,
}


def test_history_evaluations_and_export(fixed_clock: None) -> None:
    result = train(make_config(**TINY))
    assert [r.episode for r in result.episodes] == [0, 1, 2]
    assert [r.env_steps for r in result.episodes] == [60, 120, 180]
    returns = [r.episode_return for r in result.episodes]
    assert result.episodes[-1].avg_return_10 == pytest.approx(np.mean(returns))
    assert all(b.wall_time >= a.wall_time for a, b in zip(result.episodes, result.episodes[1:], strict=False))
    # eval_every=2: after episode 1, and after the last episode (2)
    assert [e.episode for e in result.evaluations] == [1, 2]
    assert [e.env_steps for e in result.evaluations] == [120, 180]
    assert result.stopped_early is False
    weights = decode_actor(result.actor_bytes)
    assert (weights.obs_dim, weights.act_dim, weights.hidden_size) == (3, 1, 16)
    assert weights.env_id == "Pendulum-v1"
    np.testing.assert_array_equal(weights.action_low, [-2.0])
    np.testing.assert_array_equal(weights.action_high, [2.0])
    assert weights.config == make_config(**TINY).to_dict()
    assert weights.seed == 0
    # export="best": the exported actor is the best-evaluated one and carries its evaluation
    assert result.eval_mean_return == max(e.mean_return for e in result.evaluations)
    assert weights.eval_mean_return == pytest.approx(result.eval_mean_return)


def test_exported_return_is_reproduced_by_the_numpy_actor(fixed_clock: None) -> None:
    result = train(make_config(**TINY, export="last"))
    assert result.eval_mean_return == result.evaluations[-1].mean_return
    stats = evaluate_policy(
        NumpyActor.from_bytes(result.actor_bytes).act, "Pendulum-v1", episodes=2, max_episode_steps=60
    )
    assert stats.mean_return == pytest.approx(result.eval_mean_return, abs=1e-6)


def test_same_seed_same_bytes_and_other_seed_differs(fixed_clock: None) -> None:
    first = train(make_config(**TINY, seed=5))
    second = train(make_config(**TINY, seed=5))
    assert first.actor_bytes == second.actor_bytes
    assert [r.episode_return for r in first.episodes] == [r.episode_return for r in second.episodes]
    other = train(make_config(**TINY, seed=6))
    assert other.actor_bytes != first.actor_bytes


def test_ou_noise_preset_runs(fixed_clock: None) -> None:
    overrides = {**TINY, "hidden_size": 16, "episodes": 2, "replay_size": 1000}
    result = train(make_config("seed", **overrides))
    assert len(result.episodes) == 2 and result.evaluations[-1].episode == 1


def test_callback_sees_every_episode_and_can_stop_training() -> None:
    seen: list[tuple[EpisodeRecord, EvaluationRecord | None]] = []

    def callback(episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> bool:
        seen.append((episode, evaluation))
        return episode.episode < 1  # stop after the second episode

    result = train(make_config(**{**TINY, "episodes": 5, "eval_every": 1}), callback)
    assert result.stopped_early is True
    assert [e.episode for e, _ in seen] == [0, 1]
    assert all(evaluation is not None and evaluation.episode == e.episode for e, evaluation in seen)
    assert len(result.episodes) == 2
    decode_actor(result.actor_bytes)  # a stopped run still exports a valid actor


def test_callback_gets_none_between_evaluations() -> None:
    evaluations: list[EvaluationRecord | None] = []
    train(make_config(**{**TINY, "eval_every": 0}), lambda _e, ev: evaluations.append(ev) is None)
    assert evaluations[:-1] == [None, None] and evaluations[-1] is not None  # eval_every=0: only at the end


def test_unknown_env_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="NoSuchEnv"):
        train(make_config(env_id="NoSuchEnv-v0"))


def test_default_preset_learns_far_beyond_the_untrained_actor() -> None:
    """~2,400 env steps of the default preset: an untrained actor scores about -1,200..-1,500 here."""
    config = make_config(seed=2, episodes=12)
    seed_everything(config.seed)
    spec = env_spec(make_env(config.env_id), config.env_id)
    untrained = DDPGAgent.from_config(config, spec.obs_dim, spec.act_dim)
    untrained_actor = NumpyActor.from_bytes(
        export_actor(untrained.actor_state(), spec=spec, config=config, eval_mean_return=None)
    )
    baseline = evaluate_policy(untrained_actor.act, config.env_id, episodes=config.eval_episodes).mean_return

    result = train(config)
    assert result.eval_mean_return is not None
    assert result.eval_mean_return > baseline + 600
    assert result.eval_mean_return > -500
