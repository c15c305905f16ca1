"""A request's database session whose clean-up fails (the connection broke after the request's own work) does not
turn an answer already decided into a 500."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from app.routes.deps import get_session


class _SessionOnADeadConnection:
    closed = False

    def close(self) -> None:
        self.closed = True
        raise OperationalError("ROLLBACK", {}, Exception("consuming input failed: server closed the connection"))


class _Database:
    def __init__(self) -> None:
        self.session = _SessionOnADeadConnection()

    def sessions(self) -> Any:
        return self.session


def test_a_failed_close_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    database = _Database()
    dependency = get_session(database)  # type: ignore[arg-type]
    assert next(dependency) is database.session
    with caplog.at_level("WARNING", logger="app.routes.deps"), pytest.raises(StopIteration):
        next(dependency)  # the request is done: the dependency's clean-up runs
    assert database.session.closed
    assert "closing a request's database session failed" in caplog.text
