"""The TransitionSource over a model's recorded experience (store.tables.serving_records.ExperienceChunk): the
cursor is a chunk id.

Chunks are read whole, oldest first, from their row or from the chunk storage (EXPERIENCE_URL) wherever the
recorder put them, and decoded with models.experience_chunks. Only the few columns learning needs are kept.

Ids are drawn at insert, so on PostgreSQL two API processes may commit chunks out of id order, and a chunk whose id
is below the cursor when it commits would never be read. So there a chunk is read only once it is SETTLE_SECONDS old:
a chunk with a smaller id was inserted earlier and has committed by then, unless its flush's transaction took longer
than that (or the API hosts' clocks disagree by more). SQLite serialises writers: chunks commit in id order there.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.experience_chunks import decode_chunk
from store.chunk_storage import ChunkMissingError, ChunkStorage
from store.experience_reading import ChunkStorageMissingError, chunk_bytes
from store.tables.base import utcnow
from store.tables.serving_records import ExperienceChunk
from trainer.claim_loop import Database
from trainer.online.source import Batch, Transitions

logger = logging.getLogger(__name__)

# Chunk rows looked at per read: the summaries are small, the bytes are loaded only for the chunks taken.
_SCAN_LIMIT = 1000
# How old a chunk must be before a learner on PostgreSQL reads it (see the module docstring).
SETTLE_SECONDS = 2.0


class ExperienceSource:
    """A model's experience chunks in the database, as the learner's TransitionSource."""

    def __init__(
        self, database: Database, model_id: int, obs_dim: int, act_dim: int, storage: ChunkStorage | None = None
    ) -> None:
        self._db = database
        self._storage = storage
        self.model_id = model_id
        self.obs_dim = obs_dim
        self.act_dim = act_dim

    def read_after(self, cursor: int, *, max_transitions: int) -> Batch:
        def read(session: Session) -> Batch:
            query = select(ExperienceChunk.id, ExperienceChunk.transitions).where(
                ExperienceChunk.model_id == self.model_id, ExperienceChunk.id > cursor
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.where(ExperienceChunk.created_at <= utcnow() - timedelta(seconds=SETTLE_SECONDS))
            summaries = session.execute(query.order_by(ExperienceChunk.id).limit(_SCAN_LIMIT)).all()
            taken: list[int] = []
            count = 0
            for chunk_id, transitions in summaries:
                if taken and count + transitions > max_transitions:
                    break
                taken.append(chunk_id)
                count += transitions
            new_cursor = taken[-1] if taken else cursor
            pending = session.scalar(
                select(func.coalesce(func.sum(ExperienceChunk.transitions), 0)).where(
                    ExperienceChunk.model_id == self.model_id, ExperienceChunk.id > new_cursor
                )
            )
            return Batch(self._decode(session, taken), new_cursor, int(pending or 0))

        return self._db.retrying(f"model {self.model_id}: reading experience", read)

    def read_until(self, cursor: int, *, max_transitions: int) -> Transitions:
        def read(session: Session) -> Transitions:
            taken: list[int] = []
            count = 0
            for chunk_id, transitions in session.execute(
                select(ExperienceChunk.id, ExperienceChunk.transitions)
                .where(ExperienceChunk.model_id == self.model_id, ExperienceChunk.id <= cursor)
                .order_by(ExperienceChunk.id.desc())
            ):
                if count >= max_transitions:
                    break
                taken.append(chunk_id)
                count += transitions
            return self._decode(session, list(reversed(taken))).newest(max_transitions)

        return self._db.retrying(f"model {self.model_id}: refilling the replay buffer", read)

    def _decode(self, session: Session, chunk_ids: list[int]) -> Transitions:
        if not chunk_ids:
            return Transitions.empty(self.obs_dim, self.act_dim)
        rows = session.execute(
            select(ExperienceChunk.id, ExperienceChunk.data, ExperienceChunk.storage_key)
            .where(ExperienceChunk.id.in_(chunk_ids))
            .order_by(ExperienceChunk.id)
        ).all()
        parts: list[Transitions] = []
        for chunk_id, data, storage_key in rows:
            try:
                columns = decode_chunk(chunk_bytes(data, storage_key, self._storage))
            except (ChunkMissingError, ChunkStorageMissingError) as exc:
                logger.warning("experience chunk %d skipped: %s", chunk_id, exc)
                continue
            if columns.obs_dim != self.obs_dim or columns.act_dim != self.act_dim:
                logger.warning("experience chunk %d has other dimensions than the model: skipped", chunk_id)
                continue
            parts.append(
                Transitions(
                    columns.observation,
                    columns.action,
                    columns.reward,
                    columns.next_observation,
                    columns.terminated,
                )
            )
        return Transitions.concat(parts) if parts else Transitions.empty(self.obs_dim, self.act_dim)
