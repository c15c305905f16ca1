"""The states of `python -m app`'s embedded children (trainer worker, sweep runner), from the launcher that keeps them
running to every API process's `/readyz`: one small JSON file, replaced whole on every change.

A file because the API may run in several processes (WORKERS) that the launcher did not fork itself; its path
reaches them in EMBEDDED_STATES_ENV, as the metrics directory does. A file that cannot be read (not written yet,
or removed at shutdown) reads as no children.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

EMBEDDED_STATES_ENV = "DDPG_EMBEDDED_STATES_FILE"

# running: the process is up. restarting: it died on its own and is started again after a delay. failed: it kept
# dying, so it is no longer restarted. stopped: stopped as asked (the launcher is shutting down).
ChildStateName = Literal["running", "restarting", "failed", "stopped"]


@dataclass(frozen=True)
class ChildState:
    state: ChildStateName
    pid: int | None
    restarts: int  # how often it was started again after dying
    exit_code: int | None  # of its last exit (negative: the signal that ended it)


class ChildStatesFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_environment(cls) -> ChildStatesFile | None:
        """The file the launcher named for this process, or None (no launcher: plain uvicorn, compose)."""
        path = os.environ.get(EMBEDDED_STATES_ENV)
        return cls(Path(path)) if path else None

    def write(self, states: Mapping[str, ChildState]) -> None:
        """Replace the file at once, so a reader never sees half of it."""
        data = json.dumps({name: asdict(state) for name, state in states.items()})
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".states-")
        with os.fdopen(fd, "w") as file:
            file.write(data)
        os.replace(temporary, self.path)

    def read(self) -> dict[str, ChildState]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {name: ChildState(**fields) for name, fields in raw.items()}
