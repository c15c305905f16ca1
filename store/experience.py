"""Recorded experience in the database: a model's recording settings, its chunks, their totals, and retention.

The API processes write chunks (models.experience_chunks) in one transaction per flush (`write_chunks`): every
chunk of the flush with its flush id, the dropped count, and retention, which deletes a model's oldest chunks while
the newer ones alone hold at least `max_transitions`. A flush id is unique, so a flush retried after its COMMIT's
reply was lost adds nothing the second time. Every function here leaves committing to the caller, except
`write_chunks`, which is the whole transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, undefer

from store.live_returns import first_attempt_to_land
from store.registry import bump_version
from store.tables.base import utcnow
from store.tables.registry import Model
from store.tables.serving_records import ExperienceChunk


@dataclass(frozen=True, slots=True)
class ChunkToWrite:
    """One encoded chunk and its summary, as the recorder hands it over."""

    model_id: int
    data: bytes
    first_time: float
    last_time: float
    transitions: int
    episodes: int
    policy_counts: dict[str, int]
    # {arm: [episodes, return_sum, return_sq_sum]} for the episodes that ended in the chunk.
    returns: dict[str, list[float]]


@dataclass(frozen=True, slots=True)
class FlushBatch:
    """What one process writes in one transaction: its chunks and the transitions it dropped, by model id."""

    flush_id: str
    chunks: tuple[ChunkToWrite, ...]
    dropped: dict[int, int] = field(default_factory=dict)


# Stores a chunk's bytes elsewhere and returns its key (external storage); None keeps the bytes in the row.
PutChunk = Callable[[str, bytes], str]


# The statements of every flush, built once: constructing them (and generating their cache keys) cost a flush more
# Python than running them. Each takes its values as bound parameters.
_FLUSHED = (
    select(func.count())
    .select_from(ExperienceChunk)
    .where(ExperienceChunk.flush_id.in_(bindparam("chunk_ids", expanding=True)))
)
_EXISTING = select(Model.id).where(Model.id.in_(bindparam("model_ids", expanding=True)))
# The table's own (Core) insert: the ORM's would track objects nobody reads back.
_INSERT = insert(cast(Table, ExperienceChunk.__table__))
_SETTINGS = select(Model.experience).where(Model.id == bindparam("model_id"))
# The newest chunk to delete: the newest one whose newer chunks alone hold the limit. Summed by the database (a
# window over the model's chunks) rather than by reading every chunk's row here on every flush.
_NEWER = func.coalesce(
    func.sum(ExperienceChunk.transitions).over(order_by=ExperienceChunk.id.desc(), rows=(None, -1)), 0
)
_RUNNING = (
    select(ExperienceChunk.id.label("id"), _NEWER.label("newer"))
    .where(ExperienceChunk.model_id == bindparam("model_id"))
    .subquery()
)
_CUT = select(func.max(_RUNNING.c.id)).where(_RUNNING.c.newer >= bindparam("limit"))


def write_chunks(
    session: Session,
    batch: FlushBatch,
    put: PutChunk | None = None,
    removed_keys: list[str] | None = None,
) -> int:
    """Write one flush (its chunks, dropped counts and retention) and commit; returns the chunks added (0 when
    this flush id was written before). Chunks of a model deleted meanwhile are skipped. The storage keys of the
    chunks retention deleted are appended to `removed_keys`, for the caller to delete after the commit."""
    ids = [f"{batch.flush_id}.{index}" for index in range(len(batch.chunks))]
    if not ids:
        # Dropped counts alone: no chunk id can tell a retry, so the flush id is recorded where live returns'
        # batch ids are (kept an hour).
        if not first_attempt_to_land(session, batch.flush_id):
            session.rollback()
            return 0
    elif session.scalar(_FLUSHED, {"chunk_ids": ids}):
        session.rollback()
        return 0
    model_ids = {c.model_id for c in batch.chunks}
    existing = set(session.scalars(_EXISTING, {"model_ids": list(model_ids)})) if model_ids else set()
    rows = []
    for chunk_id, chunk in zip(ids, batch.chunks, strict=False):
        if chunk.model_id not in existing:
            continue
        key = None if put is None else put(chunk_id, chunk.data)
        rows.append(
            {
                "model_id": chunk.model_id,
                "flush_id": chunk_id,
                "created_at": utcnow(),
                "first_time": chunk.first_time,
                "last_time": chunk.last_time,
                "transitions": chunk.transitions,
                "episodes": chunk.episodes,
                "size_bytes": len(chunk.data),
                "policy_counts": chunk.policy_counts,
                "returns": chunk.returns,
                "data": chunk.data if key is None else None,
                "storage_key": key,
            }
        )
    if rows:
        session.execute(_INSERT, rows)
    for model_id, dropped in batch.dropped.items():
        if dropped:
            session.execute(
                update(Model)
                .where(Model.id == model_id)
                .values(experience_dropped=Model.experience_dropped + dropped)
                .execution_options(synchronize_session=False)
            )
    session.flush()
    for model_id in model_ids & existing:
        keys = apply_retention(session, model_id)
        if removed_keys is not None:
            removed_keys.extend(keys)
    session.commit()
    return len(rows)


def apply_retention(session: Session, model_id: int) -> list[str]:
    """Delete the model's oldest chunks beyond its max_transitions (the newest chunks that reach it stay);
    returns the storage keys of deleted external chunks, for their storage to delete."""
    settings = session.scalar(_SETTINGS, {"model_id": model_id})
    if not settings:
        return []
    cut = session.scalar(_CUT, {"model_id": model_id, "limit": int(settings.get("max_transitions", 0))})
    if cut is None:
        return []
    old = ExperienceChunk.model_id == model_id, ExperienceChunk.id <= cut
    keys = [k for k in session.scalars(select(ExperienceChunk.storage_key).where(*old)) if k is not None]
    session.execute(delete(ExperienceChunk).where(*old).execution_options(synchronize_session=False))
    return keys


def set_settings(session: Session, model: Model, settings: dict[str, Any]) -> list[str]:
    """Store the model's recording settings and tell every API process (they record within one poll); returns the
    storage keys of chunks a lower limit deleted."""
    bump_version(session)
    model.experience = settings
    session.flush()
    return apply_retention(session, model.id)


def clear(session: Session, model: Model) -> list[str]:
    """Delete every chunk of the model and reset its dropped count; returns the external storage keys."""
    where = ExperienceChunk.model_id == model.id
    keys = [k for k in session.scalars(select(ExperienceChunk.storage_key).where(where)) if k is not None]
    session.execute(delete(ExperienceChunk).where(where).execution_options(synchronize_session=False))
    model.experience_dropped = 0
    session.flush()
    return keys


@dataclass(frozen=True, slots=True)
class ExperienceTotals:
    """A model's stored experience, summed over its chunks."""

    chunks: int
    transitions: int
    episodes: int
    size_bytes: int
    oldest: float | None
    newest: float | None
    per_policy: dict[int, int]
    returns: dict[str, list[float]]


def totals(session: Session, model_id: int) -> ExperienceTotals:
    """Sums over the model's chunks (their summaries only: no chunk is decoded)."""
    chunks, transitions, episodes, size, oldest, newest = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(ExperienceChunk.transitions), 0),
            func.coalesce(func.sum(ExperienceChunk.episodes), 0),
            func.coalesce(func.sum(ExperienceChunk.size_bytes), 0),
            func.min(ExperienceChunk.first_time),
            func.max(ExperienceChunk.last_time),
        ).where(ExperienceChunk.model_id == model_id)
    ).one()
    per_policy: dict[int, int] = {}
    returns: dict[str, list[float]] = {}
    for counts, arms in session.execute(
        select(ExperienceChunk.policy_counts, ExperienceChunk.returns).where(ExperienceChunk.model_id == model_id)
    ):
        for policy, count in counts.items():
            per_policy[int(policy)] = per_policy.get(int(policy), 0) + int(count)
        for arm, sums in arms.items():
            total = returns.setdefault(arm, [0.0, 0.0, 0.0])
            for index in range(3):
                total[index] += float(sums[index])
    return ExperienceTotals(
        int(chunks), int(transitions), int(episodes), int(size), oldest, newest, per_policy, returns
    )


def chunk_rows(session: Session, model_id: int, *, after_id: int = 0, limit: int = 100) -> Sequence[ExperienceChunk]:
    """The model's chunks after `after_id`, oldest first, with their bytes (or storage keys): what a learner tailing
    new experience reads."""
    return session.scalars(
        select(ExperienceChunk)
        .options(undefer(ExperienceChunk.data))
        .where(ExperienceChunk.model_id == model_id, ExperienceChunk.id > after_id)
        .order_by(ExperienceChunk.id)
        .limit(limit)
    ).all()
