"""What every table shares: the declarative base, the UTC datetime and JSON column types, and `utcnow`.

Every timestamp is timezone-aware UTC in Python. PostgreSQL stores `timestamptz`; SQLite has no time zone
type, so `UTCDateTime` stores naive UTC text there and re-attaches UTC on the way out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime that is always timezone-aware UTC in Python, whatever the database stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use an aware datetime")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them all naive in UTC so the ordering is right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL (compact, indexable); plain JSON text elsewhere.
JSONDict = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONDict, float: Float(precision=53)}


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """The SQL condition `column IN ('a', 'b')`, for a CHECK constraint over a fixed vocabulary."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
