"""The API process's handle on the database: engine, sessions, and start-up tasks (migrate, POLICY_FILE).

If the database is down at start-up the API still starts (serving /healthz, and /readyz says why it is not
ready) and keeps retrying in the background; it never crashes for a database that comes back later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from models.registry_vocabulary import DEFAULT_MODEL_NAME
from store.chunk_storage import ChunkStorage, delete_after_commit
from store.db import create_db_engine, make_session_factory, migrate
from store.experience import FlushBatch, PutChunk, write_chunks
from store.live_returns import ReturnSums, ShadowSums, flush
from store.policies import get_policy, get_serving_state, register_policy
from store.registry import RegistrySnapshot, read_snapshot
from store.tables.registry import Policy

logger = logging.getLogger(__name__)

_RETRY_MAX_SECONDS = 30.0


class StoredPolicy(NamedTuple):
    """A policy as the API loads it: its weights and the model it is a version of."""

    weights: bytes
    model_id: int | None


def redacted(url: str) -> str:
    """The URL with its password masked, safe for logs."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass
class Database:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    # The model /act serves without `model` (DEFAULT_MODEL): its champion is "the default policy".
    default_model: str = DEFAULT_MODEL_NAME
    # Set once migrations ran (and POLICY_FILE was registered); until then /readyz reports not ready.
    prepared: asyncio.Event = field(default_factory=asyncio.Event)
    # Where recorded chunks' bytes go (EXPERIENCE_URL); None: into their rows.
    chunk_storage: ChunkStorage | None = None

    @classmethod
    def connect(cls, url: str, default_model: str = DEFAULT_MODEL_NAME) -> Database:
        engine = create_db_engine(url)  # lazy: opens no connection yet
        return cls(url, engine, make_session_factory(engine), default_model)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def serving_state(self) -> tuple[int | None, int]:
        """(the default model's champion, the registry version)."""
        with self.sessions() as session:
            return get_serving_state(session, self.default_model)

    def registry_snapshot(self) -> RegistrySnapshot:
        with self.sessions() as session:
            return read_snapshot(session)

    def policy_weights(self, policy_id: int) -> bytes | None:
        with self.sessions() as session:
            policy = get_policy(session, policy_id)
            return None if policy is None else policy.weights

    def stored_policy(self, policy_id: int) -> StoredPolicy | None:
        with self.sessions() as session:
            policy = get_policy(session, policy_id)
            return None if policy is None else StoredPolicy(policy.weights, policy.model_id)

    def flush_live_returns(
        self, flush_id: str, returns: Mapping[tuple[int, int], ReturnSums], shadow: Mapping[int, ShadowSums]
    ) -> list[tuple[int, str]]:
        """One process's batch of live returns and shadow figures (written once per id), and the rollbacks its
        guard check caused."""
        with self.sessions() as session:
            return flush(session, returns, shadow, flush_id=flush_id)

    def flush_experience(self, batch: FlushBatch) -> int:
        """One process's flush of recorded experience, in one transaction (written once per flush id). With
        EXPERIENCE_URL (`chunk_storage`) each chunk's bytes are put there first, under its chunk id, and the row
        keeps the key; the bytes of chunks retention removed are deleted after the commit."""
        storage = self.chunk_storage
        removed: list[str] = []
        with self.sessions() as session:
            added = write_chunks(session, batch, None if storage is None else _putter(storage), removed)
        delete_after_commit(storage, removed)
        return added

    def prepare(self, policy_file: Path | None) -> None:
        """Migrate the schema and register POLICY_FILE (blocking; run in a thread)."""
        migrate(self.url)
        if policy_file is not None:
            register_policy_file(self.sessions, policy_file, self.default_model)

    async def try_prepare(self, policy_file: Path | None) -> bool:
        """One attempt at `prepare` off the event loop; False (logged) if the database is not there."""
        try:
            await asyncio.to_thread(self.prepare, policy_file)
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            logger.warning("database %s not ready (%s: %s)", redacted(self.url), type(exc).__name__, detail)
            return False
        self.prepared.set()
        logger.info("database %s ready", redacted(self.url))
        return True

    async def prepare_with_retry(self, policy_file: Path | None) -> None:
        """Keep trying `prepare` with capped exponential backoff until it succeeds (a lifespan task)."""
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            if await self.try_prepare(policy_file):
                return
            delay = min(delay * 2, _RETRY_MAX_SECONDS)
            logger.info("retrying the database in %.0f s", delay)


def register_policy_file(sessions: sessionmaker[Session], path: Path, default_model: str = DEFAULT_MODEL_NAME) -> int:
    """Register an exported actor file and make it its model's champion (the default model's when the file is for its
    environment), unless the same bytes are already registered.

    Re-registering on every start would pile up duplicates and, worse, undo a later promotion at each
    restart; so a file seen before (same sha256) is left as it is. Raises WeightsFormatError for a bad file.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with sessions() as session:
        existing = session.scalar(select(Policy.id).where(Policy.sha256 == digest).order_by(Policy.id).limit(1))
        if existing is not None:
            logger.info("POLICY_FILE %s is already registered as policy %s", path, existing)
            return existing
        policy = register_policy(session, weights=data, promote="always", default_model=default_model)
        session.commit()
        logger.info("registered POLICY_FILE %s as policy %s (now the default)", path, policy.id)
        return policy.id


def _putter(storage: ChunkStorage) -> PutChunk:
    """Puts a chunk's bytes under its chunk id (unique, never reused: a retried flush puts the same bytes again)."""

    def put(chunk_id: str, data: bytes) -> str:
        storage.put(chunk_id, data)
        return chunk_id

    return put
