"""The recorder's buffers on their own: what record() appends is what a flush encodes, value for value, across
flushes, with and without noise and reward; transitions whose sizes do not fit the model's are dropped and counted."""

from __future__ import annotations

import asyncio

import numpy as np

from app.infra.metrics import Metrics
from app.serving.experience import ExperienceRecorder, PendingStep
from models.experience_chunks import ExperienceColumns, decode_chunk
from store.experience import FlushBatch


def _recorder(max_buffered: int = 10_000) -> tuple[ExperienceRecorder, list[FlushBatch], Metrics]:
    written: list[FlushBatch] = []

    def write(batch: FlushBatch) -> int:
        written.append(batch)
        return len(batch.chunks)

    metrics = Metrics()
    return ExperienceRecorder(write, metrics, max_buffered=max_buffered), written, metrics


def _step(rng: np.random.Generator, index: int, *, explored: bool) -> PendingStep:
    observation = rng.standard_normal(3).astype(np.float32)
    action = rng.uniform(-2, 2, 2).astype(np.float32).tolist()
    noise = rng.standard_normal(2).astype(np.float32) if explored else None
    return (observation, action, noise, 0.3 if explored else 0.0, 7 + index % 2, index, 1.7e9 + index / 8)


def test_flushed_chunks_hold_exactly_what_was_recorded() -> None:
    recorder, written, _ = _recorder()
    rng = np.random.default_rng(0)
    expected: list[tuple[PendingStep, float | None, np.ndarray, bool, bool, str, int]] = []
    for flush in range(3):
        for index in range(700 + flush * 500):
            pending = _step(rng, index, explored=index % 3 == 0)
            reward = None if index % 5 == 0 else float(rng.standard_normal())
            following = rng.standard_normal(3).astype(np.float32)
            ending = (index % 11 == 10, index % 13 == 12 and index % 11 != 10)
            session, episode = f"session-{index % 4}", 2**62 + index
            recorder.record(
                1,
                "m",
                pending,
                reward=reward,
                next_observation=following,
                terminated=ending[0],
                truncated=ending[1],
                session=session,
                episode=episode,
            )
            expected.append((pending, reward, following, *ending, session, episode))
        assert asyncio.run(recorder.flush()) == 700 + flush * 500
    assert recorder.buffered == 0 and not recorder.pending
    columns = ExperienceColumns.concat([decode_chunk(chunk.data) for batch in written for chunk in batch.chunks])
    assert len(columns) == len(expected)
    pending_rows = [row[0] for row in expected]
    np.testing.assert_array_equal(columns.observation, np.stack([p[0] for p in pending_rows]))
    np.testing.assert_array_equal(columns.action, np.array([p[1] for p in pending_rows], np.float32))
    noise = np.array([np.zeros(2, np.float32) if p[2] is None else p[2] for p in pending_rows])
    np.testing.assert_array_equal(columns.noise, noise)
    np.testing.assert_array_equal(columns.noise_scale, np.array([p[3] for p in pending_rows], np.float32))
    np.testing.assert_array_equal(columns.policy_id, [p[4] for p in pending_rows])
    np.testing.assert_array_equal(columns.step, [p[5] for p in pending_rows])
    np.testing.assert_array_equal(columns.time, [p[6] for p in pending_rows])
    rewards = np.array([np.nan if row[1] is None else row[1] for row in expected], np.float32)
    np.testing.assert_array_equal(columns.reward, rewards)  # NaN where no reward was reported
    np.testing.assert_array_equal(columns.next_observation, np.stack([row[2] for row in expected]))
    np.testing.assert_array_equal(columns.terminated, [row[3] for row in expected])
    np.testing.assert_array_equal(columns.truncated, [row[4] for row in expected])
    assert columns.session.tolist() == [row[5] for row in expected]
    np.testing.assert_array_equal(columns.episode, [row[6] for row in expected])


def test_sizes_that_do_not_fit_the_model_are_dropped_and_counted() -> None:
    recorder, written, metrics = _recorder()
    rng = np.random.default_rng(1)
    fits = _step(rng, 0, explored=False)
    wide_action = (fits[0], [*fits[1], 0.5], *fits[2:])
    short_observation = (fits[0][:2], *fits[1:])
    for pending, following in (
        (fits, np.zeros(3, np.float32)),
        (fits, np.zeros(4, np.float32)),
        (wide_action, np.zeros(3, np.float32)),
        (short_observation, np.zeros(3, np.float32)),
    ):
        recorder.record(
            1,
            "m",
            pending,  # type: ignore[arg-type]
            reward=1.0,
            next_observation=following,
            terminated=False,
            truncated=False,
            session="s",
            episode=1,
        )
    assert recorder.buffered == 1
    assert metrics.experience_dropped.labels("m", "buffer_full").value == 3
    assert asyncio.run(recorder.flush()) == 1
    assert written[0].dropped == {1: 3}
    assert len(decode_chunk(written[0].chunks[0].data)) == 1
