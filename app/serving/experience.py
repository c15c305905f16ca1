"""Recording live sessions as transitions: what a model records and explores with, the columnar buffers of one API
process, and the flusher that writes them as compressed chunks (models.experience_chunks), off the answer's path.

A transition needs the next observation, so a session step is held by its session (`PendingStep`) until the
session's next request arrives: that request's observation is the step's next_observation, its `reward` the step's
reward, and its `done` / `truncated` how the step ended. The request that ends an episode (`done` or `truncated`)
carries the final observation; it is answered as before (existing clients read an action), but that action belongs
to no transition and is not recorded. A step whose session is dropped before its next request (idle, evicted,
stream closed) is lost and counted (`session_dropped`).

Exactly once. A session lives in one process's memory (app.serving.sessions): the stream's connection and an HTTP
keep-alive connection stay on one process, and so do all of its steps; each step is completed by the one process
that holds it, appended once, and written in one flush whose id makes a retried write a no-op. If a session's
requests hop to another process, that process cannot complete the step held elsewhere: the held step is lost
(counted when its session expires there), and the new process records the rest of the episode under a new episode
id. Nothing is ever recorded twice.

Bounded: at most EXPERIENCE_BUFFER_TRANSITIONS transitions wait in memory (blocks of numpy columns, and the last
block's transitions as tuples until BLOCK_ROWS of them become columns); beyond it new ones are dropped and counted
(`buffer_full`). A flush every EXPERIENCE_FLUSH_SECONDS swaps the blocks
out, encodes one chunk per model in a thread, and writes them in one transaction; a write that fails is kept whole
and retried first (under the same id), and while it waits its transitions still count against the bound.
What a killed process loses: the transitions completed since its last successful flush (at most one flush
interval of them, plus any batch whose write was failing), and the steps its sessions were holding.

Requests without a session never reach this module (app.serving.routed_act only calls it from a session step).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from app.infra.loop_metrics import LoopCounterChild
from app.infra.metrics import Metrics
from app.serving.served_models import session_bucket
from models.experience_chunks import NO_POLICY, ExperienceColumns, encode_chunk
from models.registry_vocabulary import SPLIT_BUCKETS
from store.experience import ChunkToWrite, FlushBatch

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
# Transitions held as tuples before they become a block of columns: enough that the conversion's fixed cost is
# small per row, few enough that the tuples' memory (about 500 bytes a transition against 70 in columns) and the
# conversion's pause of the event loop (about 0.4 ms at 1024) stay small.
BLOCK_ROWS = 1024
# One chunk holds at most this many transitions (a bigger flush writes several), so no chunk grows without bound.
MAX_CHUNK_TRANSITIONS = 100_000
# Writes one flush (store.experience.write_chunks in a session of its own); returns the chunks added.
WriteFlush = Callable[[FlushBatch], int]


@dataclass(frozen=True, slots=True)
class ExplorePlan:
    """Gaussian noise for `percent` of sessions, chosen by the keyed session hash (the canary's), so every
    process agrees which sessions explore; `scale` is sigma times each dimension's half-range."""

    sigma: float
    percent: float
    threshold: int
    salt: bytes
    scale: FloatArray
    low: FloatArray
    high: FloatArray

    def explores(self, session: str) -> bool:
        return self.threshold > 0 and session_bucket(self.salt, session) < self.threshold


@dataclass(frozen=True, slots=True)
class RecordingPlan:
    """A model that records: its limit and its exploration (None: the policy's actions as they are)."""

    max_transitions: int
    explore: ExplorePlan | None


def recording_plan(settings: dict[str, object] | None, spaces: dict[str, object]) -> RecordingPlan | None:
    """The plan for a model's stored settings (store.experience.set_settings); None when it does not record."""
    if not settings or not settings.get("record"):
        return None
    explore = settings.get("explore")
    plan = None
    if isinstance(explore, dict) and explore.get("sigma") and explore.get("percent"):
        low = np.asarray(spaces["action_low"], np.float32)
        high = np.asarray(spaces["action_high"], np.float32)
        sigma, percent = float(explore["sigma"]), float(explore["percent"])
        plan = ExplorePlan(
            sigma,
            percent,
            round(percent * SPLIT_BUCKETS / 100),
            str(explore.get("salt", "")).encode(),
            (sigma * (high - low) / 2).astype(np.float32),
            low,
            high,
        )
    return RecordingPlan(int(str(settings.get("max_transitions", 0))), plan)


# A served session step waiting for its next observation (held by its session): (observation, action, noise or
# None, noise_scale, policy_id, step, time). A plain tuple: built on every recorded step, where a class's __init__
# cost more than the rest of the step's recording.
PendingStep = tuple[FloatArray, list[float], FloatArray | None, float, int, int, float]
# A completed transition as `record` holds it until its block is full: (pending, reward or None, next_observation,
# terminated, truncated, session, episode).
Transition = tuple[PendingStep, float | None, FloatArray, bool, bool, str, int]
STEP: Final = 5  # the step's index in a PendingStep


def _vectors(arrays: Sequence[Any], dim: int) -> FloatArray:
    """float32 vectors of `dim` values each as one [n, dim] array, joined from their bytes (b"".join reads any
    contiguous array, about five times faster than numpy's conversion of a sequence of small arrays; typed Any
    because numpy's stubs do not declare its arrays buffers)."""
    data = b"".join(arrays)
    if len(data) != len(arrays) * dim * 4:
        raise ValueError(f"recorded vectors are not all {dim} float32 values")
    return np.frombuffer(data, np.float32).reshape(len(arrays), dim)


def _columns(rows: list[Transition], obs_dim: int, act_dim: int) -> ExperienceColumns:
    """Transitions held as tuples as numpy columns: transposed by zip, each column converted whole."""
    n = len(rows)
    pending, reward, next_observation, terminated, truncated, session, episode = zip(*rows, strict=True)
    observation, action, noise, noise_scale, policy_id, step, times = zip(*pending, strict=True)
    noise_column = np.zeros((n, act_dim), np.float32)
    # By identity (`==` would compare an array's values): which transitions explored.
    explored = np.fromiter(map(operator.is_not, noise, itertools.repeat(None)), np.bool_, n)
    if explored.any():
        noise_column[explored] = _vectors([value for value in noise if value is not None], act_dim)
    return ExperienceColumns(
        observation=_vectors(observation, obs_dim),
        action=np.fromiter(itertools.chain.from_iterable(action), np.float32, n * act_dim).reshape(n, act_dim),
        # No reward sent with the next request: None, which numpy makes NaN, so a learner sees it was not reported
        # (never a made-up 0).
        reward=np.array(reward, np.float32),
        next_observation=_vectors(next_observation, obs_dim),
        terminated=np.array(terminated, np.bool_),
        truncated=np.array(truncated, np.bool_),
        policy_id=np.array(policy_id, np.int64),
        session=np.array(session, object),
        episode=np.array(episode, np.int64),
        step=np.array(step, np.int32),
        noise=noise_column,
        noise_scale=np.array(noise_scale, np.float32),
        time=np.array(times, np.float64),
    )


@dataclass(slots=True)
class _ModelBuffer:
    """One model's transitions since the last flush: full blocks as columns, the transitions of the block being
    filled as tuples, and episode returns."""

    model_id: int
    name: str
    obs_dim: int
    act_dim: int
    # Its experience_recorded_transitions_total child, looked up once rather than on every step.
    recorded: LoopCounterChild
    blocks: list[ExperienceColumns] = field(default_factory=list)
    rows: list[Transition] = field(default_factory=list)
    # arm -> [episodes, return_sum, return_sq_sum] of the episodes that ended since the last flush.
    returns: dict[str, list[float]] = field(default_factory=dict)
    dropped: int = 0


# A model's buffer with what a flush took from it: its full blocks and the rows of the block being filled.
_Taken = tuple[_ModelBuffer, list[ExperienceColumns], list[Transition]]


@dataclass(frozen=True, slots=True)
class _Batch:
    flush_id: str
    batch: FlushBatch
    transitions: int


class ExperienceRecorder:
    """The recording buffers of one process (event-loop only: nothing is locked) and their flusher."""

    def __init__(self, write: WriteFlush, metrics: Metrics, *, max_buffered: int) -> None:
        self._write = write
        self._metrics = metrics
        self.max_buffered = max_buffered
        self._buffers: dict[int, _ModelBuffer] = {}
        self.buffered = 0  # transitions in the buffers and in an unconfirmed batch
        self._unconfirmed: _Batch | None = None
        self._id_prefix = f"x{os.getpid()}-{secrets.token_hex(6)}"
        self._sequence = itertools.count(1)
        self.flushes = 0
        self.failed_flushes = 0

    def record(
        self,
        model_id: int,
        name: str,
        pending: PendingStep,
        *,
        reward: float | None,
        next_observation: FloatArray,
        terminated: bool,
        truncated: bool,
        session: str,
        episode: int,
    ) -> None:
        """Append one completed transition (or count it dropped when the buffers are full). On every recorded
        session step, so kept to a tuple appended to a list (13 numpy item assignments, one per column, cost about 2
        microseconds): the columns are built once per BLOCK_ROWS transitions, each converted whole."""
        buffer = self._buffers.get(model_id)
        if buffer is None:
            obs_dim, act_dim = pending[0].shape[0], len(pending[1])
            recorded = self._metrics.experience_recorded.labels(name)
            buffer = self._buffers[model_id] = _ModelBuffer(model_id, name, obs_dim, act_dim, recorded)
        if (
            self.buffered >= self.max_buffered
            or len(next_observation) != buffer.obs_dim
            or len(pending[1]) != buffer.act_dim
        ):
            buffer.dropped += 1
            self._metrics.experience_dropped.labels(name, "buffer_full").inc()
            return
        rows = buffer.rows
        rows.append((pending, reward, next_observation, terminated, truncated, session, episode))
        self.buffered += 1
        buffer.recorded.value += 1  # LoopCounterChild.inc without its call
        if len(rows) == BLOCK_ROWS:
            buffer.blocks.append(_columns(rows, buffer.obs_dim, buffer.act_dim))
            buffer.rows = []

    def episode_ended(self, model_id: int, explored: bool, episode_return: float) -> None:
        """Count a finished episode's return under its arm (`explore` or `policy`) for the next chunk."""
        buffer = self._buffers.get(model_id)
        if buffer is None:
            return
        sums = buffer.returns.setdefault("explore" if explored else "policy", [0, 0.0, 0.0])
        sums[0] += 1
        sums[1] += episode_return
        sums[2] += episode_return * episode_return

    def dropped(self, model_id: int, name: str, reason: str) -> None:
        """A transition lost before it reached the buffers (its session dropped before the next observation)."""
        buffer = self._buffers.get(model_id)
        if buffer is not None:
            buffer.dropped += 1
        self._metrics.experience_dropped.labels(name, reason).inc()

    @property
    def pending(self) -> bool:
        buffers = self._buffers.values()
        return self._unconfirmed is not None or any(b.blocks or b.rows or b.dropped for b in buffers)

    def _take(self) -> tuple[list[_Taken], dict[int, int]]:
        """Swap the blocks and the rows of the block being filled out (on the loop); returns them and the dropped
        counts. The rows become columns in the flush's thread."""
        taken: list[_Taken] = []
        dropped: dict[int, int] = {}
        for buffer in self._buffers.values():
            if buffer.blocks or buffer.rows:
                taken.append((buffer, buffer.blocks, buffer.rows))
                buffer.blocks, buffer.rows = [], []
            if buffer.dropped:
                dropped[buffer.model_id] = buffer.dropped
                buffer.dropped = 0
        return taken, dropped

    async def flush(self) -> int:
        """Write the unconfirmed batch, if any, then what is buffered (each encoded and written in a thread); on
        failure keep the batch for the next flush. Returns the transitions written."""
        written = 0
        for _attempt in range(2):
            if self._unconfirmed is None:
                taken, dropped = self._take()
                if not taken and not dropped:
                    break
                returns = {buffer.model_id: buffer.returns for buffer, _, _ in taken}
                for buffer, _, _ in taken:
                    buffer.returns = {}
                flush_id = f"{self._id_prefix}-{next(self._sequence)}"
                self._unconfirmed = await asyncio.to_thread(_encode, flush_id, taken, dropped, returns)
            batch = self._unconfirmed
            try:
                await asyncio.to_thread(self._write, batch.batch)
            except Exception as exc:
                self.failed_flushes += 1
                self._metrics.experience_flushes.labels("failed").inc()
                logger.warning("cannot write experience flush %s (kept for the next attempt): %s", batch.flush_id, exc)
                break
            self.flushes += 1
            self._metrics.experience_flushes.labels("written").inc()
            self.buffered -= batch.transitions
            written += batch.transitions
            self._unconfirmed = None
        return written

    async def run(self, interval: float) -> None:
        """Flush every `interval` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:  # the flusher must outlive any one bad batch
                logger.exception("experience flush failed")


def _encode(
    flush_id: str,
    taken: list[_Taken],
    dropped: dict[int, int],
    returns: dict[int, dict[str, list[float]]],
) -> _Batch:
    """One chunk per model (split beyond MAX_CHUNK_TRANSITIONS), encoded; runs in a thread."""
    chunks: list[ChunkToWrite] = []
    total = 0
    for buffer, blocks, rows in taken:
        parts = [*blocks, _columns(rows, buffer.obs_dim, buffer.act_dim)] if rows else blocks
        columns = parts[0] if len(parts) == 1 else ExperienceColumns.concat(parts)
        total += len(columns)
        arms = {arm: [float(v) for v in sums] for arm, sums in returns.get(buffer.model_id, {}).items()}
        for start in range(0, len(columns), MAX_CHUNK_TRANSITIONS):
            part = columns.take(slice(start, start + MAX_CHUNK_TRANSITIONS))
            ids, counts = np.unique(part.policy_id, return_counts=True)
            chunks.append(
                ChunkToWrite(
                    model_id=buffer.model_id,
                    data=encode_chunk(part),
                    first_time=float(part.time.min()),
                    last_time=float(part.time.max()),
                    transitions=len(part),
                    episodes=part.episodes_ended(),
                    policy_counts={str(int(i)): int(c) for i, c in zip(ids, counts, strict=True)},
                    returns=arms if start == 0 else {},
                )
            )
    return _Batch(flush_id, FlushBatch(flush_id, tuple(chunks), dropped), total)


# Exploration noise: a generator of this process (not a secret, not reproducible: each step's noise is recorded).
_NOISE = np.random.default_rng()


def explore_noise(plan: ExplorePlan, action: list[float]) -> tuple[list[float], FloatArray]:
    """The policy's action plus Gaussian noise, clipped to the action bounds, and the noise drawn (float32
    throughout; minimum/maximum rather than np.clip, whose dispatch costs more than the arithmetic here)."""
    noise = _NOISE.standard_normal(len(action), np.float32) * plan.scale
    noisy = np.minimum(np.maximum(np.asarray(action, np.float32) + noise, plan.low), plan.high)
    return noisy.tolist(), noise


def now() -> float:
    return time.time()


__all__ = ["NO_POLICY", "STEP", "ExperienceRecorder", "ExplorePlan", "PendingStep", "RecordingPlan", "recording_plan"]
