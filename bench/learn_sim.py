"""The online learner's loop simulated in one process, on a clock of learner updates: which of the service's delays
cost environment steps, measured without the service or a shared machine's noise.

    python bench/learn_sim.py --reps 4
    python bench/learn_sim.py --setups base,lag200,pub25 --reps 6

Time advances one tick per gradient update the learner could run. Each client steps its environment
`client_speed` times a tick (the service answers faster than the learner updates), waits between episodes while the
learner has more than `max_lag` unlearned transitions (as `drive(max_lag=...)`; counting the steps not flushed yet,
as the service does, unless `count_unflushed` is off), and its steps reach the learner in blocks every `flush_every`
ticks (the recorder's flush). A published policy reaches the sessions `refresh_delay`
ticks later (the registry poll), and a session keeps the policy it started its episode with, unless `follow`. The
actions are the service's: uniform until the first publish, then the policy plus Gaussian noise (sigma of the
config). The learner is trainer.online.learner.OnlineLearner itself over an InMemorySource.

Printed per setup and repetition: environment steps, gradient updates and ticks until the learner's actor, looked at
every 200 recorded steps (as the in-process row evaluates after every episode), first reaches the target held-out
return. Ticks are the learner-bound wall time in units of one update. The `in-process` setup is train() itself
(seeds 0, 1, ...), for the spread the local loop has on its own.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(REPO))

from bench.learn_env import ENV_ID, ReorderedPendulum, evaluate_weights  # noqa: E402
from models.policy import NumpyActor  # noqa: E402
from models.training_config import TrainingConfig, make_config  # noqa: E402
from trainer.env import EnvSpec  # noqa: E402
from trainer.online.learner import LearnerProgress, OnlineLearner  # noqa: E402
from trainer.online.source import InMemorySource, Transitions  # noqa: E402

SPEC = EnvSpec(ENV_ID, 3, 1, np.array([-1.0], np.float32), np.array([1.0], np.float32))
EVAL_SPACING = 200


@dataclass(frozen=True)
class Setup:
    """One configuration of the simulated loop; the defaults are learn_bench's (one client about 8 times as fast as
    the learner, flushes and registry polls of 0.2 s at about 300 updates a second)."""

    clients: int = 1
    publish_every: int = 100
    max_lag: int | None = 400  # None: free-running clients
    client_speed: float = 8.0  # environment steps per client per tick
    flush_every: int = 60  # ticks between the recorder's flushes
    refresh_delay: int = 60  # ticks from a publish to the sessions' seeing it
    follow: bool = False  # sessions switch to a newer policy mid-episode (the service never does)
    count_unflushed: bool = True  # the lag a waiting client sees includes the recorder's unflushed steps
    old_due: bool = False  # the learner as it was: one update per consumed transition, warm-up included
    publish_first: bool = False  # publish after the first update too: the warm-up ends when learning starts
    random_until: int = 0  # recorded steps driven with uniform actions at least (a longer warm-up)


class PublishFirstLearner(OnlineLearner):
    def train(self, max_updates: int) -> int:
        first = self.updates == 0
        done = super().train(max_updates)
        if first and done and self.publishes == 0:
            self.publish_now()
        return done


class OldDueLearner(OnlineLearner):
    def due_updates(self) -> int:
        if self.transitions_consumed < self.config.learning_starts or len(self.buffer) < self.config.batch_size:
            return 0
        return max(0, self.transitions_consumed // self.config.update_every - self.updates)


SETUPS: dict[str, Setup] = {
    "old": Setup(old_due=True, count_unflushed=False),
    "leaky": Setup(count_unflushed=False),
    "base": Setup(),
    "first": Setup(publish_first=True),
    "random1200": Setup(random_until=1200),
    "2c": Setup(clients=2),
    "follow": Setup(follow=True),
    "pub25": Setup(publish_every=25),
    "lag200": Setup(max_lag=200),
    "fast": Setup(flush_every=15, refresh_delay=15),
    "fast-pub25-lag200": Setup(publish_every=25, max_lag=200, flush_every=15, refresh_delay=15),
    "free": Setup(max_lag=None),
    "ideal": Setup(publish_every=1, max_lag=0, flush_every=1, refresh_delay=0, follow=True),
    "lockstep": Setup(publish_every=1, max_lag=None, client_speed=1.0, flush_every=1, refresh_delay=0, follow=True),
    "lag800": Setup(max_lag=800),
    "2c-lag800": Setup(clients=2, max_lag=800),
}


class Client:
    def __init__(self, index: int, noise_seed: int, sigma: float) -> None:
        self.env = ReorderedPendulum()
        self.seed = (index + 1) * 100_000
        self.rng = np.random.default_rng(noise_seed * 1000 + index)
        self.sigma = sigma
        self.episode = 0
        self.in_episode = False
        self.policy: NumpyActor | None = None
        self.obs = np.zeros(3, np.float32)
        self.credit = 0.0
        self.rows: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, bool]] = []

    def start(self, policy: NumpyActor | None) -> None:
        self.obs, _ = self.env.reset(seed=self.seed + self.episode)
        self.policy, self.in_episode = policy, True
        self.episode += 1

    def step(self) -> int:
        if self.policy is None:
            action = self.rng.uniform(-1.0, 1.0, 1).astype(np.float32)
        else:
            mean = self.policy.act(self.obs[None])[0]
            action = np.clip(mean + self.sigma * self.rng.standard_normal(1), -1.0, 1.0).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.rows.append((self.obs, action, float(reward), next_obs, bool(terminated)))
        self.obs = next_obs
        if terminated or truncated:
            self.in_episode = False
        return 1

    def flush(self) -> Transitions | None:
        if not self.rows:
            return None
        obs, actions, rewards, next_obs, terminated = (np.array(c) for c in zip(*self.rows, strict=True))
        self.rows = []
        return Transitions(
            obs.astype(np.float32),
            actions.astype(np.float32),
            rewards.astype(np.float32),
            next_obs.astype(np.float32),
            terminated.astype(np.bool_),
        )


def simulate(setup: Setup, config: TrainingConfig, rep: int, target: float, budget: int) -> tuple[bool, int, int, int]:
    source = InMemorySource(SPEC.obs_dim, SPEC.act_dim)
    published: list[tuple[int, NumpyActor]] = []  # (tick visible from, actor)
    tick = 0

    def publish(actor: bytes, checkpoint: bytes, progress: LearnerProgress) -> None:
        published.append((tick + setup.refresh_delay, NumpyActor.from_bytes(actor)))

    kind = OldDueLearner if setup.old_due else PublishFirstLearner if setup.publish_first else OnlineLearner
    learner = kind(config, SPEC, source, publish, publish_every=setup.publish_every)
    clients = [Client(i, rep, config.noise_sigma) for i in range(setup.clients)]
    flushed = driven = 0
    next_eval = EVAL_SPACING
    while driven < budget:
        visible = next((actor for at, actor in reversed(published) if at <= tick), None)
        for client in clients:
            if not client.in_episode:
                unlearned = flushed - learner.transitions_consumed
                if setup.count_unflushed:
                    unlearned += sum(len(other.rows) for other in clients)
                unlearned += learner.due_updates() * config.update_every
                if setup.max_lag is None or client.episode == 0 or unlearned <= setup.max_lag:
                    client.start(visible if driven >= setup.random_until else None)
                    client.credit = 0.0
            if client.in_episode:
                client.credit += setup.client_speed
                while client.credit >= 1 and client.in_episode:
                    client.credit -= 1
                    if setup.follow:
                        client.policy = visible
                    driven += client.step()
        if tick % setup.flush_every == 0:
            for client in clients:
                block = client.flush()
                if block is not None:
                    source.append(block)
                    flushed += len(block)
        learner.read()
        learner.train(1)
        tick += 1
        if driven >= next_eval:
            next_eval += EVAL_SPACING
            held = evaluate_weights(learner.actor_bytes())
            if held >= target:
                return True, driven, learner.updates, tick
    return False, driven, learner.updates, tick


def in_process(seed: int, target: float, budget: int) -> tuple[bool, int, int, int]:
    from trainer.training import train

    config = make_config("default", env_id=ENV_ID, seed=seed, episodes=budget // 200, eval_every=1, eval_episodes=20)
    reached: list[int] = []

    def watch(episode: object, evaluation: object) -> bool:
        if evaluation is None:
            return True
        if evaluation.mean_return >= target:  # type: ignore[attr-defined]
            reached.append(evaluation.env_steps)  # type: ignore[attr-defined]
            return False
        return True

    train(config, callback=watch)
    if not reached:
        return False, budget, 0, 0
    steps = reached[0]
    updates = config.updates_after(steps)
    return True, steps, updates, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="in-process,base,2c")
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--target", type=float, default=-200.0)
    parser.add_argument("--budget", type=int, default=12_000)
    parser.add_argument("--set", action="append", default=[], help="override a Setup field, e.g. publish_every=25")
    args = parser.parse_args(argv)
    config = make_config("default", env_id=ENV_ID, seed=0)
    for name in args.setups.split(","):
        results = []
        for rep in range(args.reps):
            if name == "in-process":
                results.append(in_process(rep, args.target, args.budget))
            else:
                setup = SETUPS[name]
                for item in args.set:
                    key, value = item.split("=")
                    current = getattr(setup, key)
                    parsed: object = value.lower() in ("1", "true", "yes") if isinstance(current, bool) else value
                    if not isinstance(current, bool):
                        parsed = None if value == "none" else type(current or 0)(value)
                    setup = replace(setup, **{key: parsed})
                results.append(simulate(setup, config, rep, args.target, args.budget))
            ok, steps, updates, ticks = results[-1]
            print(
                f"{name:<20} rep {rep}: {'' if ok else '>'}{steps} steps, {updates} updates, {ticks} ticks", flush=True
            )
        steps = [r[1] for r in results]
        ticks = [r[3] for r in results]
        print(f"{name:<20} median {int(np.median(steps))} steps, {int(np.median(ticks))} ticks; max {max(steps)} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
