"""The recorder's flushes run one at a time: an explicit flush (at shutdown, or a test's) that arrives while the
periodic one is writing waits for it, so everything recorded before the call is stored, once, when it returns."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from app.infra.metrics import Metrics
from app.serving.experience import ExperienceRecorder, PendingStep
from store.experience import FlushBatch


def _record(recorder: ExperienceRecorder, steps: range) -> None:
    for step in steps:
        pending: PendingStep = (np.zeros(3, np.float32), [0.0], None, 0.0, 1, step, float(step))
        recorder.record(
            1, "arm", pending, session="s", episode=0, reward=-1.0,
            next_observation=np.ones(3, np.float32), terminated=False, truncated=False,
        )  # fmt: skip


def test_an_explicit_flush_waits_for_the_one_under_way_and_nothing_is_written_twice() -> None:
    written: list[tuple[str, int]] = []
    first_write_started, release_first_write = threading.Event(), threading.Event()

    def write(batch: FlushBatch) -> int:
        if not written and not first_write_started.is_set():
            first_write_started.set()
            assert release_first_write.wait(10)
        transitions = sum(chunk.transitions for chunk in batch.chunks)
        written.append((batch.flush_id, transitions))
        return transitions

    async def scenario() -> int:
        recorder = ExperienceRecorder(write, Metrics(), max_buffered=10_000)
        _record(recorder, range(40))
        periodic = asyncio.create_task(recorder.flush())
        await asyncio.to_thread(first_write_started.wait, 10)  # the periodic flush is writing its 40
        _record(recorder, range(40, 70))
        explicit = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0.05)
        assert not explicit.done()  # it waits for the write under way
        release_first_write.set()
        from_explicit = await explicit
        assert periodic.done()  # the explicit flush returned after the one under way
        return await periodic + from_explicit

    assert asyncio.run(scenario()) == 70
    assert sum(transitions for _, transitions in written) == 70
    assert len({flush_id for flush_id, _ in written}) == len(written)  # no batch written twice
