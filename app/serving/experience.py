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

Bounded: at most EXPERIENCE_BUFFER_TRANSITIONS transitions wait in memory (growing typed arrays, one per column,
about 70 bytes a transition); beyond it new ones are dropped and counted (`buffer_full`). A flush every
EXPERIENCE_FLUSH_SECONDS swaps them out, encodes one chunk per model in a thread, and writes them in one
transaction; a write that fails is kept whole and retried first (under the same id), and while it waits its
transitions still count against the bound.
What a killed process loses: the transitions completed since its last successful flush (at most one flush
interval of them, plus any batch whose write was failing), and the steps its sessions were holding.

Requests without a session never reach this module (app.serving.routed_act only calls it from a session step).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from app.infra.loop_metrics import LoopCounterChild
from app.infra.metrics import Metrics
from models.experience_chunks import NO_POLICY, ExperienceColumns, encode_chunk
from store.experience import ChunkToWrite, FlushBatch

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
# One chunk holds at most this many transitions (a bigger flush writes several), so no chunk grows without bound.
MAX_CHUNK_TRANSITIONS = 100_000
# Writes one flush (store.experience.write_chunks in a session of its own); returns the chunks added.
WriteFlush = Callable[[FlushBatch], int]


# A served session step waiting for its next observation (held by its session): (observation, action, noise or
# None, noise_scale, policy_id, step, time). A plain tuple: built on every recorded step, where a class's __init__
# cost more than the rest of the step's recording.
PendingStep = tuple[FloatArray, list[float], FloatArray | None, float, int, int, float]
STEP: Final = 5  # the step's index in a PendingStep


class _Growing:
    """One model's transitions since the last flush, appended column by column: the float32 vectors as their bytes
    (bytearray.extend reads an array's buffer; numpy views the bytes without a copy), every other column as a list
    of its Python values, which numpy converts whole when a flush takes them (in the flush's thread).

    On every recorded step, so kept to appends: 13 numpy item assignments into preallocated blocks cost about 2
    microseconds a step; tuples held until a block filled cost the garbage collector and a conversion on the event
    loop; array.append parses its argument with a format string for every value."""

    __slots__ = (
        "action",
        "episode",
        "next_observation",
        "noise",
        "noise_scale",
        "observation",
        "policy_id",
        "reward",
        "session",
        "step",
        "terminated",
        "time",
        "truncated",
        "zero_noise",
    )

    def __init__(self, act_dim: int) -> None:
        self.observation = bytearray()
        self.action: list[float] = []
        self.reward: list[float | None] = []
        self.next_observation = bytearray()
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.policy_id: list[int] = []
        self.session: list[str] = []
        self.episode: list[int] = []
        self.step: list[int] = []
        self.noise = bytearray()
        self.noise_scale: list[float] = []
        self.time: list[float] = []
        self.zero_noise = bytes(4 * act_dim)

    def __len__(self) -> int:
        return len(self.session)

    def columns(self, obs_dim: int, act_dim: int) -> ExperienceColumns:
        """The transitions as numpy columns; reshape refuses vectors of the wrong size."""
        n = len(self.session)
        return ExperienceColumns(
            observation=np.frombuffer(self.observation, np.float32).reshape(n, obs_dim),
            action=np.array(self.action, np.float32).reshape(n, act_dim),
            # No reward sent with the next request: None, which numpy makes NaN, so a learner sees it was not
            # reported (never a made-up 0).
            reward=np.array(self.reward, np.float32),
            next_observation=np.frombuffer(self.next_observation, np.float32).reshape(n, obs_dim),
            terminated=np.array(self.terminated, np.bool_),
            truncated=np.array(self.truncated, np.bool_),
            policy_id=np.array(self.policy_id, np.int64),
            session=np.array(self.session, object),
            episode=np.array(self.episode, np.int64),
            step=np.array(self.step, np.int32),
            noise=np.frombuffer(self.noise, np.float32).reshape(n, act_dim),
            noise_scale=np.array(self.noise_scale, np.float32),
            time=np.array(self.time, np.float64),
        )


@dataclass(slots=True)
class _ModelBuffer:
    """One model's transitions since the last flush, and episode returns."""

    model_id: int
    name: str
    obs_dim: int
    act_dim: int
    # Its experience_recorded_transitions_total child, looked up once rather than on every step.
    recorded: LoopCounterChild
    growing: _Growing
    # arm -> [episodes, return_sum, return_sq_sum] of the episodes that ended since the last flush.
    returns: dict[str, list[float]] = field(default_factory=dict)
    dropped: int = 0


# A model's buffer with the transitions a flush took from it.
_Taken = tuple[_ModelBuffer, _Growing]


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
        # One flush at a time: the periodic one and an explicit one (shutdown, a test) would otherwise both take
        # blocks and both set _unconfirmed across their awaits, and one could write the other's batch.
        self._flush_lock = asyncio.Lock()
        # Transitions per model in the flush under way (taken from the buffers, not confirmed written yet).
        self._in_flight: dict[int, int] = {}
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
        session step: plain lookups and one append per column (see _Growing)."""
        buffer = self._buffers.get(model_id)
        if buffer is None:
            obs_dim, act_dim = len(pending[0]), len(pending[1])
            recorded = self._metrics.experience_recorded.labels(name)
            buffer = _ModelBuffer(model_id, name, obs_dim, act_dim, recorded, _Growing(act_dim))
            self._buffers[model_id] = buffer
        observation, action, noise, noise_scale, policy_id, step, time = pending
        # Every vector of a transition has its model's size, so the columns stay aligned (a session is pinned to
        # one policy, whose sizes every request was checked against; this guards the model's, which could differ).
        if (
            self.buffered >= self.max_buffered
            or len(next_observation) != buffer.obs_dim
            or len(observation) != buffer.obs_dim
            or len(action) != buffer.act_dim
        ):
            buffer.dropped += 1
            self._metrics.experience_dropped.labels(name, "buffer_full").inc()
            return
        growing = buffer.growing
        growing.observation.extend(observation)
        growing.action.extend(action)
        growing.reward.append(reward)  # None (not reported) becomes NaN in the column
        growing.next_observation.extend(next_observation)
        growing.terminated.append(terminated)
        growing.truncated.append(truncated)
        growing.policy_id.append(policy_id)
        growing.session.append(session)
        growing.episode.append(episode)
        growing.step.append(step)
        growing.noise.extend(growing.zero_noise if noise is None else noise)
        growing.noise_scale.append(noise_scale)
        growing.time.append(time)
        self.buffered += 1
        buffer.recorded.value += 1  # LoopCounterChild.inc without its call

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

    def unflushed(self, model_id: int) -> int:
        """The model's transitions this process recorded and has not confirmed written: in its buffers or in the flush
        under way (counted twice for the moment between that flush's commit and its confirmation). A count only, so
        it may be read from another thread: the learner's lag a client waits on includes its own latest episode,
        which the next flush (EXPERIENCE_FLUSH_SECONDS) has not written yet."""
        buffer = self._buffers.get(model_id)
        buffered = 0 if buffer is None else len(buffer.growing)
        return buffered + self._in_flight.get(model_id, 0)

    @property
    def pending(self) -> bool:
        buffers = self._buffers.values()
        return self._unconfirmed is not None or any(len(b.growing) or b.dropped for b in buffers)

    def _take(self) -> tuple[list[_Taken], dict[int, int]]:
        """Swap the recorded transitions out (on the loop); returns them and the dropped counts."""
        taken: list[_Taken] = []
        dropped: dict[int, int] = {}
        for buffer in self._buffers.values():
            if len(buffer.growing):
                taken.append((buffer, buffer.growing))
                buffer.growing = _Growing(buffer.act_dim)
            if buffer.dropped:
                dropped[buffer.model_id] = buffer.dropped
                buffer.dropped = 0
        return taken, dropped

    async def flush(self) -> int:
        """Write the unconfirmed batch, if any, then what is buffered (each encoded and written in a thread); on
        failure keep the batch for the next flush. Returns the transitions written. A flush already under way is
        waited for first, so what was buffered when this was called is written (or kept) when it returns."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        written = 0
        for _attempt in range(2):
            if self._unconfirmed is None:
                taken, dropped = self._take()
                if not taken and not dropped:
                    break
                self._in_flight = {buffer.model_id: len(growing) for buffer, growing in taken}
                returns = {buffer.model_id: buffer.returns for buffer, _ in taken}
                for buffer, _ in taken:
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
            self._in_flight = {}
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
    for buffer, growing in taken:
        columns = growing.columns(buffer.obs_dim, buffer.act_dim)
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


def now() -> float:
    return time.time()


__all__ = ["NO_POLICY", "STEP", "ExperienceRecorder", "PendingStep"]
