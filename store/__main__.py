"""`python -m store migrate|ping`: schema migrations and a reachability check, for containers and operators.

The database URL comes from DATABASE_URL, else the SQLite file under DATA_DIR (default ./data).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from store.db import create_db_engine, migrate
from store.settings import StoreSettings, load_settings, with_flags

logger = logging.getLogger("store")


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(StoreSettings)
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__)
    parser.add_argument("command", choices=["migrate", "ping"], help="migrate: upgrade to head; ping: SELECT 1")
    parser.add_argument("--database-url", default=settings.database_url, help="overrides DATABASE_URL")
    args = parser.parse_args(argv)
    settings = with_flags(settings, database_url=args.database_url)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    url = settings.database_url
    try:
        if args.command == "migrate":
            migrate(url)
            logger.info("database schema is at the newest revision")
        else:
            with create_db_engine(url).connect() as connection:
                connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        # One line, no traceback: this runs in health checks and container logs.
        logger.error("database %s failed: %s", args.command, exc.__class__.__name__ + ": " + str(exc).splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
