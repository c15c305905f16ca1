"""Bodies of /healthz and /readyz."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.infra.child_states import ChildStateName


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class EmbeddedChildOut(BaseModel):
    state: ChildStateName = Field(
        description="`running`; `restarting` after it died (started again after a delay); `failed` once it kept "
        "dying and is no longer restarted; `stopped` while the service shuts down."
    )
    pid: int | None = Field(description="Its process id (of the last process, while it is down).")
    restarts: int = Field(description="How often it was started again after dying.")
    exit_code: int | None = Field(description="Its last exit code, if it exited (negative: the signal that ended it).")


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    database: Literal["ok"] = "ok"
    policy_id: int = Field(description="The default policy this process is serving.")
    embedded: dict[str, EmbeddedChildOut] | None = Field(
        None,
        # Absent rather than null: the body of a service without embedded children is exactly what it always was.
        exclude_if=lambda value: value is None,
        description="The trainer worker and sweep runner `python -m app` runs beside the API, by name; absent when "
        "it runs none. Ready means /act is served: a child that is down shows here, it does not make /readyz 503.",
    )
