"""Recorded experience written exactly once per flush id, with or without chunks, and retention by transitions."""

from __future__ import annotations

from sqlalchemy.orm import Session

from models.experience_chunks import empty_columns, encode_chunk
from store.experience import ChunkToWrite, FlushBatch, set_settings, totals, write_chunks
from store.registry import create_model
from store.tables.registry import Model

SPACES = {"obs_dim": 3, "act_dim": 1, "action_low": [-2.0], "action_high": [2.0]}


def _model(session: Session, max_transitions: int = 1000) -> Model:
    model = create_model(session, name="arm", env_id=None, spaces=SPACES)
    set_settings(session, model, {"record": True, "max_transitions": max_transitions, "explore": None})
    session.commit()
    return model


def _chunk(model_id: int, transitions: int, at: float) -> ChunkToWrite:
    # The bytes do not matter to the store: it keeps them as they are.
    data = encode_chunk(empty_columns(3, 1))
    return ChunkToWrite(model_id, data, at, at + 1, transitions, 1, {"7": transitions}, {"policy": [1, -5.0, 25.0]})


def test_a_flush_retried_under_its_id_adds_once(session: Session) -> None:
    model = _model(session)
    batch = FlushBatch("p1-abc-1", (_chunk(model.id, 10, 100.0),), {model.id: 2})
    assert write_chunks(session, batch) == 1
    assert write_chunks(session, batch) == 0  # the retry after a lost COMMIT reply
    stored = totals(session, model.id)
    assert (stored.chunks, stored.transitions, stored.per_policy) == (1, 10, {7: 10})
    session.refresh(model)
    assert model.experience_dropped == 2


def test_a_flush_of_dropped_counts_alone_adds_once(session: Session) -> None:
    model = _model(session)
    batch = FlushBatch("p1-abc-2", (), {model.id: 3})
    write_chunks(session, batch)
    write_chunks(session, batch)
    write_chunks(session, FlushBatch("p1-abc-3", (), {model.id: 1}))
    session.refresh(model)
    assert model.experience_dropped == 4


def test_retention_keeps_the_newest_chunks_that_reach_the_limit(session: Session) -> None:
    model = _model(session, max_transitions=25)
    for index in range(5):
        write_chunks(session, FlushBatch(f"p1-r-{index}", (_chunk(model.id, 10, 100.0 + index),)))
    stored = totals(session, model.id)
    assert (stored.chunks, stored.transitions, stored.oldest) == (3, 30, 102.0)


def test_retention_at_exactly_the_limit_and_after_lowering_it(session: Session) -> None:
    model = _model(session, max_transitions=20)
    for index, transitions in enumerate((10, 10, 10, 10, 10)):
        write_chunks(session, FlushBatch(f"p1-e-{index}", (_chunk(model.id, transitions, 100.0 + index),)))
    stored = totals(session, model.id)
    assert (stored.chunks, stored.transitions, stored.oldest) == (2, 20, 103.0)
    write_chunks(session, FlushBatch("p1-e-5", (_chunk(model.id, 7, 105.0),)))
    stored = totals(session, model.id)  # 7 + 10 < 20: the chunk before them stays
    assert (stored.chunks, stored.transitions, stored.oldest) == (3, 27, 103.0)
    set_settings(session, model, {"record": True, "max_transitions": 5, "explore": None})
    session.commit()
    stored = totals(session, model.id)
    assert (stored.chunks, stored.transitions, stored.oldest) == (1, 7, 105.0)
