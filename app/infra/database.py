"""The API process's handle on the database: engine, sessions, and start-up tasks (migrate, POLICY_FILE).

If the database is down at start-up the API still starts (serving /healthz, and /readyz says why it is not
ready) and keeps retrying in the background; it never crashes for a database that comes back later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from store.db import create_db_engine, make_session_factory, migrate
from store.policies import get_policy, get_serving_state, register_policy
from store.tables import Policy

logger = logging.getLogger(__name__)

_RETRY_MAX_SECONDS = 30.0


def redacted(url: str) -> str:
    """The URL with its password masked, safe for logs."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass
class Database:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    # Set once migrations ran (and POLICY_FILE was registered); until then /readyz reports not ready.
    prepared: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def connect(cls, url: str) -> Database:
        engine = create_db_engine(url)  # lazy: opens no connection yet
        return cls(url, engine, make_session_factory(engine))

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def serving_state(self) -> tuple[int | None, int]:
        with self.sessions() as session:
            return get_serving_state(session)

    def policy_weights(self, policy_id: int) -> bytes | None:
        with self.sessions() as session:
            policy = get_policy(session, policy_id)
            return None if policy is None else policy.weights

    def prepare(self, policy_file: Path | None) -> None:
        """Migrate the schema and register POLICY_FILE (blocking; run in a thread)."""
        migrate(self.url)
        if policy_file is not None:
            register_policy_file(self.sessions, policy_file)

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


def register_policy_file(sessions: sessionmaker[Session], path: Path) -> int:
    """Register an exported actor file and make it the default, unless the same bytes are already registered.

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
        policy = register_policy(session, weights=data, promote="always")
        session.commit()
        logger.info("registered POLICY_FILE %s as policy %s (now the default)", path, policy.id)
        return policy.id
