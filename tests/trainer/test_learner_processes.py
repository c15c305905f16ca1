"""Real learner processes (`python -m trainer learner`) on a real database: the test records experience chunks the
way the API's recorder does (acting with the model's champion, uniformly at random before the first publish), the
learner learns the client-side environment from them alone, and a SIGKILLed learner is taken over by another process
from its checkpoint.

Waits use generous deadlines only to keep a broken build from hanging; nothing asserts how fast anything is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from models.experience_chunks import ExperienceColumns, encode_chunk
from models.policy import NumpyActor
from models.training_config import make_config
from store import learners
from store.policies import get_default_policy
from store.registry import create_model
from store.tables.serving_records import ExperienceChunk
from store.tables.work_queues import Learner, LearnerPublication
from tests.processes import ChildProcess, start_process
from tests.reordered_pendulum import ReorderedPendulum, heldout_mean_return

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 300.0
MODEL = "reordered"
CHUNK = 200  # transitions per recorded chunk: one Pendulum episode
SPACES = {
    "obs_dim": 3,
    "act_dim": 1,
    "observation_low": [-8.0, -1.0, -1.0],
    "observation_high": [8.0, 1.0, 1.0],
    "action_low": [-1.0],
    "action_high": [1.0],
    "reward_range": None,
}


class Recorder:
    """The API's side, in the test: acts with the model's champion plus Gaussian noise (uniform before there is one)
    on the environment only this file defines, and writes one experience chunk per episode."""

    def __init__(self, sessions: sessionmaker[Session], model_id: int) -> None:
        self.sessions = sessions
        self.model_id = model_id
        self.env = ReorderedPendulum()
        self.rng = np.random.default_rng(7)
        self.steps = 0
        self.episodes = count()
        self.actor: NumpyActor | None = None
        self.policy_id = -1

    def refresh_actor(self) -> None:
        with self.sessions() as session:
            policy = get_default_policy(session, MODEL)
            if policy is not None and policy.id != self.policy_id:
                self.actor, self.policy_id = NumpyActor.from_bytes(policy.weights), policy.id

    def record_episode(self) -> None:
        self.refresh_actor()
        episode = next(self.episodes)
        obs, _ = self.env.reset(seed=episode)
        rows = []
        for step in range(CHUNK):
            if self.actor is None:
                action = self.rng.uniform(-1.0, 1.0, 1).astype(np.float32)
                noise = np.zeros(1, np.float32)
            else:
                noise = (0.15 * self.rng.standard_normal(1)).astype(np.float32)
                action = np.clip(self.actor.act(obs[None])[0] + noise, -1.0, 1.0).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            rows.append((obs, action, reward, next_obs, terminated, truncated, step, noise))
            obs = next_obs
        self.steps += CHUNK
        n = len(rows)
        columns = ExperienceColumns(
            observation=np.array([r[0] for r in rows], np.float32),
            action=np.array([r[1] for r in rows], np.float32),
            reward=np.array([r[2] for r in rows], np.float32),
            next_observation=np.array([r[3] for r in rows], np.float32),
            terminated=np.array([r[4] for r in rows], np.bool_),
            truncated=np.array([r[5] for r in rows], np.bool_),
            policy_id=np.full(n, self.policy_id, np.int64),
            session=np.array([f"s{episode}"] * n, dtype=object),
            episode=np.full(n, episode, np.int64),
            step=np.arange(n, dtype=np.int32),
            noise=np.array([r[7] for r in rows], np.float32),
            noise_scale=np.full(n, 0.15, np.float32),
            time=np.full(n, time.time(), np.float64),
        )
        data = encode_chunk(columns)
        with self.sessions() as session:
            session.add(
                ExperienceChunk(
                    model_id=self.model_id,
                    flush_id=f"test.{episode}",
                    first_time=float(columns.time[0]),
                    last_time=float(columns.time[-1]),
                    transitions=n,
                    episodes=1,
                    size_bytes=len(data),
                    policy_counts={str(self.policy_id): n},
                    returns={},
                    data=data,
                )
            )
            session.commit()


class LearnerProcesses:
    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.procs: list[ChildProcess] = []

    def start(self) -> ChildProcess:
        log = (self.log_dir / f"learner-{len(self.procs)}.log").open("wb")
        env = {**os.environ, "DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}
        proc = start_process(
            [sys.executable, "-m", "trainer", "learner", "--poll-interval=0.2", "--lease-seconds=3"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.log_dir.glob("learner-*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[LearnerProcesses]:
    group = LearnerProcesses(database_url, tmp_path)
    yield group
    group.stop_all()


def _learner(sessions: sessionmaker[Session], learner_id: int) -> Learner:
    with sessions() as session:
        row = session.get(Learner, learner_id)
        assert row is not None
        session.expunge(row)
        return row


def test_a_learner_process_learns_from_recorded_experience_and_is_taken_over_after_sigkill(
    sessions: sessionmaker[Session], processes: LearnerProcesses
) -> None:
    with sessions() as session:
        model = create_model(session, name=MODEL, env_id=None, spaces=SPACES)  # type: ignore[arg-type]
        learner = learners.start_learner(
            session,
            model,
            config={"preset": "default"},
            publish_every=250,
            publish="champion",
            canary=None,
            exploration=None,
        )
        session.commit()
        model_id, learner_id = model.id, learner.id
    recorder = Recorder(sessions, model_id)
    first = processes.start()
    deadline = time.monotonic() + DEADLINE

    def caught_up(process: ChildProcess) -> Learner:
        """Acting at the speed the learner learns, as a client would wait: the learner consumed every recorded
        episode and ran (nearly) all the updates they are due, before the next episode is recorded."""
        due = make_config("default").updates_after
        while (row := _learner(sessions, learner_id)).pending > 0 or row.updates + 400 < due(recorder.steps):
            assert time.monotonic() < deadline and process.poll() is None, processes.logs()
            time.sleep(0.1)
        return row

    # Record until the first process has published twice, then kill it without warning.
    while caught_up(first).publishes < 2:
        recorder.record_episode()
    killed = _learner(sessions, learner_id)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = processes.start()
    # The lease expires, the second process requeues the learner, claims it and resumes from the checkpoint.
    while (row := _learner(sessions, learner_id)).attempts < 2 or row.status != "running":
        assert time.monotonic() < deadline and second.poll() is None, processes.logs()
        time.sleep(0.2)
    assert row.worker_id != killed.worker_id
    assert row.error is not None and "stopped heartbeating" in row.error
    best = -np.inf
    while recorder.steps < 40_000:
        assert time.monotonic() < deadline and second.poll() is None, processes.logs()
        recorder.record_episode()
        caught_up(second)
        if recorder.steps % 2000 == 0 and recorder.actor is not None:
            best = heldout_mean_return(recorder.actor.act_one)
            if best >= -200:
                break
    assert best >= -200, f"held-out mean return {best:.1f} after {recorder.steps} steps\n{processes.logs()}"
    row = _learner(sessions, learner_id)
    # The takeover continued the count: nothing was learned twice from zero.
    assert row.updates >= killed.updates and row.publishes > killed.publishes
    with sessions() as session:
        published = learners.publications(session, learner_id, limit=1000)
        assert len(published) == row.publishes
        assert all(p.role == "champion" for p in published)
        assert session.query(LearnerPublication).count() == row.publishes
    # Stopping ends the row at once; the process notices at its next write and lets go.
    with sessions() as session:
        model_row = session.get(learners.Model, model_id)
        assert model_row is not None
        learners.stop_learner(session, model_row)
        session.commit()
    while "no longer held" not in processes.logs() and "stopped or taken over" not in processes.logs():
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.2)
    assert _learner(sessions, learner_id).status == "cancelled"
