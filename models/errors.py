"""How an exception is shown where space is short: a job row, a tracker's record, one log line."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 300


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`: long server responses and tracebacks stay out of job rows and logs."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
