"""A model's recorded experience read back chunk by chunk, in the order it was stored, wherever the bytes live.

The export (and any other reader) asks for the chunk ids once, a snapshot: chunks stored later are not part of
this read, and chunks removed by retention meanwhile are skipped. The bytes are then fetched a few rows at a time
and decoded one chunk at a time, so a reader holds at most `FETCH_ROWS` encoded chunks and one decoded chunk.
A chunk's bytes are in its row (`data`) or under its `storage_key` in the chunk storage (EXPERIENCE_URL): a row
written with storage keeps being read from it, and one written before storage was configured from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.experience_chunks import ExperienceColumns, decode_chunk
from store.chunk_storage import ChunkMissingError, ChunkStorage
from store.tables.serving_records import ExperienceChunk

logger = logging.getLogger(__name__)

# Encoded chunks fetched per query: few round trips, and a bound on the bytes held (chunks are at most a few MB).
FETCH_ROWS = 8


class ChunkStorageMissingError(RuntimeError):
    """A chunk's bytes are in external storage, but this process has no EXPERIENCE_URL to read them from."""


def recorded_transitions(session: Session, model_id: int) -> int:
    """How many transitions the model has stored (0: nothing recorded, or everything removed)."""
    count = session.scalar(
        select(func.coalesce(func.sum(ExperienceChunk.transitions), 0)).where(ExperienceChunk.model_id == model_id)
    )
    return int(count or 0)


def chunk_ids(session: Session, model_id: int) -> list[int]:
    """The model's chunk ids in storage order (a snapshot for one read)."""
    return list(
        session.scalars(
            select(ExperienceChunk.id).where(ExperienceChunk.model_id == model_id).order_by(ExperienceChunk.id)
        )
    )


def chunk_bytes(row_data: bytes | None, storage_key: str | None, storage: ChunkStorage | None) -> bytes:
    """A chunk's encoded bytes from its row, or from storage under its key (ChunkMissingError if gone there)."""
    if row_data is not None:
        return row_data
    if storage_key is None:
        raise ChunkMissingError("chunk row has neither data nor a storage key")
    if storage is None:
        raise ChunkStorageMissingError(
            f"chunk bytes are stored under {storage_key!r} outside the database, and EXPERIENCE_URL is not set"
        )
    return storage.get(storage_key)


def iter_chunks(session: Session, ids: list[int], storage: ChunkStorage | None) -> Iterator[ExperienceColumns]:
    """The chunks `ids` decoded, in order; a chunk deleted meanwhile (row or bytes) is skipped with a warning."""
    for start in range(0, len(ids), FETCH_ROWS):
        wanted = ids[start : start + FETCH_ROWS]
        rows = session.execute(
            select(ExperienceChunk.id, ExperienceChunk.data, ExperienceChunk.storage_key)
            .where(ExperienceChunk.id.in_(wanted))
            .order_by(ExperienceChunk.id)
        ).all()
        # Release the read transaction between batches: a long export must not pin a snapshot (PostgreSQL) or a
        # read lock (SQLite) for its whole duration.
        session.rollback()
        if len(rows) < len(wanted):
            logger.warning("%d chunk(s) removed while being read; skipped", len(wanted) - len(rows))
        for chunk_id, data, storage_key in rows:
            try:
                encoded = chunk_bytes(data, storage_key, storage)
            except ChunkMissingError as exc:
                logger.warning("chunk %d skipped: %s", chunk_id, exc)
                continue
            yield decode_chunk(encoded)
