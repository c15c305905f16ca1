"""What may reach a log line: no secret at any level, nothing a client sent unescaped, and WebSocket connection lines
only with the access log.

At DEBUG, uvicorn's WebSocket implementation (websockets' sans-I/O handshake, logged on `uvicorn.error`) writes every
request header as `< authorization: Bearer ...`. `LogHygiene` sits on the handlers, so it sees every record that is
about to be written, whichever logger made it: it replaces the configured keys wherever they appear, the value of any
credential header (`authorization: ...`, `x-api-key: ...`) and any `Bearer`/`Basic` token, and escapes control
characters in a record's arguments (where request data enters a line: a path with a NUL or an ANSI escape must not
reach a terminal or split a line).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Header names whose values are credentials, as `name: value` (websockets' `< name: value` debug lines among others).
_CREDENTIAL_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|api-key|cookie|set-cookie)(\s*:\s*)[^\n]*"
)
# A token after an HTTP authentication scheme, wherever it appears.
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;]+")
# C0 and C1 control characters and DEL, except tab: what a client may smuggle into a path, a query or a header.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# uvicorn's per-connection lines of a WebSocket (its own and websockets'), on `uvicorn.error`: what the access log
# says for HTTP requests. Matched on the message template, which is constant.
WEBSOCKET_CONNECTION_TEMPLATES = frozenset(
    {
        '%s - "WebSocket %s" [accepted]',
        '%s - "WebSocket %s" 403',
        '%s - "WebSocket %s" %d',
        "connection open",
        "connection closed",
        "connection rejected (%d %s)",
    }
)
# Loggers whose formatter reads the record's arguments, which must stay as they are (already redacted one by one).
_ARGUMENT_FORMATTED = frozenset({"uvicorn.access"})
# The loggers whose handlers uvicorn's logging configuration installs (the root's are ours or the host's).
_HANDLER_OWNERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def escape_for_log(text: str) -> str:
    """`text` with every control character written as a Python escape (`\\x00`, `\\n`): one printable line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class LogHygiene(logging.Filter):
    """Redact credentials and escape control characters in every record it sees (never drops one)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a key that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _CREDENTIAL_HEADER.sub(rf"\1\2{REDACTED}", text)
        return _SCHEME_TOKEN.sub(rf"\1\2{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            # Argument by argument first: formatters that read the arguments (uvicorn's access log unpacks them)
            # keep working.
            record.args = tuple(self.redact(escape_for_log(a)) if isinstance(a, str) else a for a in record.args)
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message and record.name not in _ARGUMENT_FORMATTED:
            # A credential split across arguments (`< %s: %s` with a header name, then its bare value).
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatted here (as the handler's formatter would) so that a secret in an exception's text is redacted.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


class WebSocketLinesWithAccessLog(logging.Filter):
    """Drop uvicorn's per-connection WebSocket lines when the access log is off (HTTP requests are not logged then
    either: each line costs a stream's throughput, and a busy control loop would fill the log with them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg in WEBSOCKET_CONNECTION_TEMPLATES)


def install_log_filters(secrets: Iterable[str], *, access_log: bool) -> None:
    """Put `LogHygiene` on every handler that writes the process's log and, without the access log, drop the
    WebSocket connection lines. Idempotent: a second call replaces the first's filters (create_app may run after
    uvicorn's own logging configuration replaced the handlers, or in a test process several times)."""
    hygiene = LogHygiene(secrets)
    for owner in _HANDLER_OWNERS:
        for handler in logging.getLogger(owner).handlers:
            _replace_filter(handler, hygiene)
    uvicorn_error = logging.getLogger("uvicorn.error")
    for existing in [f for f in uvicorn_error.filters if isinstance(f, WebSocketLinesWithAccessLog)]:
        uvicorn_error.removeFilter(existing)
    if not access_log:
        uvicorn_error.addFilter(WebSocketLinesWithAccessLog())


def _replace_filter(handler: logging.Handler, hygiene: LogHygiene) -> None:
    for existing in [f for f in handler.filters if isinstance(f, LogHygiene)]:
        handler.removeFilter(existing)
    handler.addFilter(hygiene)
