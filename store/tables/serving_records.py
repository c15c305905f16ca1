"""What the API processes write while serving: live returns per policy (with their buckets and the ids of the
batches already written) and the recorded experience of each model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from store.tables.base import Base, utcnow


class LiveReturn(Base):
    """Finished live episodes of one policy, summed over every API process: count, sum and sum of squares of the
    returns, enough for a mean and its confidence interval. Written in batches by the API (store.live_returns).

    `rollout_id` is the trial the episodes ran under, or 0 for episodes outside any trial (not a foreign key for
    that reason; the rows of a deleted model's rollouts go with their policies).
    """

    __tablename__ = "live_returns"

    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    episodes: Mapped[int] = mapped_column(default=0)
    return_sum: Mapped[float] = mapped_column(default=0.0)
    return_sq_sum: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LiveReturnBucket(Base):
    """The same episodes as `LiveReturn`, counted and summed per bucket of a fixed logarithmic scale of the return
    (store.return_buckets): what the guard's trimmed mean reads, so one extreme episode cannot move it far."""

    __tablename__ = "live_return_buckets"

    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    episodes: Mapped[int] = mapped_column(default=0)
    return_sum: Mapped[float] = mapped_column(default=0.0)


class LiveReturnFlush(Base):
    """The id of every live-return batch written in the last hour, inserted in the batch's own transaction: a batch
    retried after its COMMIT's reply was lost finds its id and adds nothing (store.live_returns.flush)."""

    __tablename__ = "live_return_flushes"
    __table_args__ = (Index("ix_live_return_flushes_created_at", "created_at"),)

    flush_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExperienceChunk(Base):
    """A block of recorded transitions of one model (models.experience_chunks: Arrow IPC, zstd), written by an API
    process in one transaction per flush. The bytes are in `data`, or in external storage under `storage_key`.

    `flush_id` is unique: a flush retried after its COMMIT's reply was lost finds its chunk and adds nothing.
    Times are unix seconds of the first and last transition; `policy_counts` maps policy id (as text, -1 for none)
    to its transitions in the chunk; `returns` sums the episodes that ended in it by arm (`explore`, `policy`):
    {arm: [episodes, return_sum, return_sq_sum]}, so explore and non-explore live returns read side by side.
    """

    __tablename__ = "experience_chunks"
    __table_args__ = (Index("ix_experience_chunks_model_id_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    flush_id: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_time: Mapped[float]
    last_time: Mapped[float]
    transitions: Mapped[int]
    episodes: Mapped[int]
    size_bytes: Mapped[int]  # the chunk's encoded size
    policy_counts: Mapped[dict[str, Any]]
    returns: Mapped[dict[str, Any]]
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # loaded only when asked for
    storage_key: Mapped[str | None] = mapped_column(String(500))
