"""What may reach a log line (app.infra.log_filters), record by record; the real server's log is checked in
tests/reliability (test_security, test_hostile_clients)."""

from __future__ import annotations

import logging

import pytest
from uvicorn.logging import AccessFormatter

from app.infra.log_filters import LogHygiene, WebSocketLinesWithAccessLog, escape_for_log, install_log_filters

KEY = "s3cret-key-0123456789"


def record(msg: str, *args: object, name: str = "uvicorn.error", exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, exc_info)


def cleaned(log_record: logging.LogRecord) -> str:
    assert LogHygiene([KEY]).filter(log_record)
    return logging.Formatter("%(message)s").format(log_record)


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("< %s: %s", ("authorization", f"Bearer {KEY[:-1]}"), "< authorization: [redacted]"),
        ("< %s: %s", ("x-api-key", "anything"), "< x-api-key: [redacted]"),
        ("< %s: %s", ("cookie", f"session={KEY}"), "< cookie: [redacted]"),
        ("token %s in a line", (KEY,), "token [redacted] in a line"),
        ("sent %s", ("Basic dXNlcjpwYXNz",), "sent Basic [redacted]"),
        ("< %s: %s", ("user-agent", "curl/8"), "< user-agent: curl/8"),
    ],
)
def test_credentials_are_redacted(msg: str, args: tuple[str, ...], expected: str) -> None:
    assert cleaned(record(msg, *args)) == expected


def test_control_characters_in_arguments_are_escaped_not_written() -> None:
    assert cleaned(record("unhandled error on %s %s", "DELETE", "/models/a\x00\x1b[31m\n")) == (
        "unhandled error on DELETE /models/a\\x00\\x1b[31m\\n"
    )
    assert escape_for_log("tab\tstays, \x9b does not") == "tab\tstays, \\x9b does not"


def test_an_access_line_keeps_its_arguments_for_uvicorns_formatter() -> None:
    line = record(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/x?k={KEY}&a=Bearer%20t", "1.1", 200, name="uvicorn.access"
    )
    text = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s", use_colors=False).format(
        (LogHygiene([KEY]).filter(line), line)[1]
    )
    assert KEY not in text and "/x?k=[redacted]&a=Bearer%20t" in text and text.endswith(" 200 OK")


def test_a_secret_in_a_traceback_is_redacted() -> None:
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError as exc:
        text = cleaned(record("failed", exc=exc))
    assert KEY not in text and "bad key [redacted]" in text


def test_websocket_connection_lines_only_with_the_access_log() -> None:
    drop = WebSocketLinesWithAccessLog()
    assert not drop.filter(record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/act/stream"))
    assert not drop.filter(record("connection open"))
    assert not drop.filter(record("connection closed"))
    assert drop.filter(record("Application startup complete."))
    uvicorn_error = logging.getLogger("uvicorn.error")
    try:
        install_log_filters([KEY], access_log=False)
        assert sum(isinstance(f, WebSocketLinesWithAccessLog) for f in uvicorn_error.filters) == 1
        install_log_filters([KEY], access_log=True)
        assert not any(isinstance(f, WebSocketLinesWithAccessLog) for f in uvicorn_error.filters)
    finally:
        install_log_filters([], access_log=True)
