"""The DDPG training loop: collect, update, evaluate, report, export. Reads top to bottom.

`train(config, callback)` is the one entry point the CLI and the job worker use.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from models.policy import NumpyActor
from models.policy_types import ObsNormalization
from models.training_config import TrainingConfig
from trainer.agent import DDPGAgent
from trainer.env import env_spec, make_env
from trainer.evaluation import evaluate_policy
from trainer.export import export_actor
from trainer.noise import make_noise
from trainer.obs_normalizer import RunningObsNormalizer
from trainer.records import EpisodeRecord, EvaluationRecord, ProgressCallback, TrainingResult
from trainer.replay_buffer import ReplayBuffer
from trainer.seeding import seed_everything

logger = logging.getLogger(__name__)


def train(config: TrainingConfig, callback: ProgressCallback | None = None) -> TrainingResult:
    """Train DDPG as configured and return the exported actor with the full reward history."""
    # One thread: small matmuls gain nothing from more, and several runs share a 2-core machine.
    # It also keeps float reductions in one order, which "same seed, same weights" relies on.
    torch.set_num_threads(1)
    rng = seed_everything(config.seed)
    env = make_env(config.env_id, config.max_episode_steps)
    spec = env_spec(env, config.env_id)
    agent = DDPGAgent.from_config(config, spec.obs_dim, spec.act_dim)
    buffer = ReplayBuffer(config.replay_size, spec.obs_dim, spec.act_dim)
    noise = make_noise(config.noise, spec.act_dim, config.noise_sigma, config.ou_theta, rng)
    # Running observation statistics (trainer/obs_normalizer.py), or None: the actor sees raw observations.
    normalizer = RunningObsNormalizer(spec.obs_dim) if config.normalize_observations else None

    episodes: list[EpisodeRecord] = []
    evaluations: list[EvaluationRecord] = []
    best_return = -np.inf
    best_state: tuple[dict[str, np.ndarray], ObsNormalization | None] | None = None
    last_evaluated_episode = -1
    stopped_early = False
    env_steps = 0
    start = time.perf_counter()

    def evaluate(episode: int) -> EvaluationRecord:
        """Evaluate the current actor through the exact bytes it would be served from (numpy, no noise)."""
        nonlocal best_return, best_state, last_evaluated_episode
        state = agent.actor_state()
        frozen = None if normalizer is None else normalizer.frozen()
        policy = NumpyActor.from_bytes(
            export_actor(state, spec=spec, config=config, eval_mean_return=None, obs_normalization=frozen)
        )
        stats = evaluate_policy(
            policy.act, config.env_id, episodes=config.eval_episodes, max_episode_steps=config.max_episode_steps
        )
        record = EvaluationRecord(
            episode=episode,
            env_steps=env_steps,
            mean_return=stats.mean_return,
            std_return=stats.std_return,
            wall_time=time.perf_counter() - start,
        )
        evaluations.append(record)
        last_evaluated_episode = episode
        if stats.mean_return > best_return:
            best_return, best_state = stats.mean_return, (state, frozen)
        return record

    try:
        for episode in range(config.episodes):
            # Seed the env once; later resets continue its RNG, so episodes differ but the run repeats.
            obs, _ = env.reset(seed=config.seed if episode == 0 else None)
            if normalizer is not None:
                normalizer.update(obs)
            noise.reset()
            episode_return = 0.0
            while True:
                # Random warm-up fills the buffer with diverse actions before the (untrained) actor acts.
                if env_steps < config.random_steps:
                    action = rng.uniform(-1.0, 1.0, spec.act_dim).astype(np.float32)
                else:
                    seen = obs if normalizer is None else normalizer.normalize(obs)
                    action = np.clip(agent.act(seen) + noise(), -1.0, 1.0, dtype=np.float32)
                next_obs, reward, terminated, truncated, _ = env.step(spec.scale_action(action))
                if normalizer is not None:
                    normalizer.update(next_obs)
                # Store the [-1, 1] action the critic sees, and `terminated` alone: truncation bootstraps.
                buffer.add(obs, action, float(reward), next_obs, bool(terminated))
                env_steps += 1
                episode_return += float(reward)
                obs = next_obs
                # Updates need a full batch in the buffer, whatever learning_starts says.
                learning = env_steps >= config.learning_starts and len(buffer) >= config.batch_size
                if learning and env_steps % config.update_every == 0:
                    batch = buffer.sample(config.batch_size, rng)
                    if normalizer is not None:
                        # The buffer holds raw observations: normalized with the statistics of now (as SB3 does).
                        batch = batch._replace(
                            observations=normalizer.normalize(batch.observations),
                            next_observations=normalizer.normalize(batch.next_observations),
                        )
                    agent.update(batch)
                if terminated or truncated:
                    break

            recent = [r.episode_return for r in episodes[-9:]] + [episode_return]
            record = EpisodeRecord(
                episode=episode,
                episode_return=episode_return,
                avg_return_10=float(np.mean(recent)),
                env_steps=env_steps,
                wall_time=time.perf_counter() - start,
            )
            episodes.append(record)
            is_last = episode == config.episodes - 1
            due = config.eval_every > 0 and (episode + 1) % config.eval_every == 0
            evaluation = evaluate(episode) if due or is_last else None
            if callback is not None and not callback(record, evaluation):
                logger.info("training stopped by the callback after episode %d", episode)
                stopped_early = True
                break
    finally:
        env.close()

    # The final actor is always evaluated, so both "last" and "best" can report a measured return.
    if last_evaluated_episode != episodes[-1].episode:
        evaluate(episodes[-1].episode)
    if config.export == "best" and best_state is not None:
        (exported_state, exported_normalization), exported_return = best_state, float(best_return)
    else:
        exported_state, exported_return = agent.actor_state(), evaluations[-1].mean_return
        exported_normalization = None if normalizer is None else normalizer.frozen()
    actor_bytes = export_actor(
        exported_state,
        spec=spec,
        config=config,
        eval_mean_return=exported_return,
        obs_normalization=exported_normalization,
    )
    return TrainingResult(
        config=config,
        actor_bytes=actor_bytes,
        eval_mean_return=exported_return,
        episodes=episodes,
        evaluations=evaluations,
        stopped_early=stopped_early,
    )
