"""Submit a hyperparameter sweep: its base and every dimension of its space checked by the one config model and the
server's budget (on every configuration a trial could get), then queued for a sweep runner."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.infra.errors import field_error
from app.schemas.sweeps import SweepRequest
from app.services.budget import check_training_budget
from app.services.queue import queue_full
from app.settings import Settings
from models.sweep_space import SpaceError, SpacePoint, check_space, grid_size
from store.jobs import QueueFullError
from store.sweeps import enqueue_sweep
from store.tables.work_queues import Sweep

QUEUE_FULL_RETRY_AFTER_SECONDS = 60


def submit_sweep(session: Session, settings: Settings, body: SweepRequest) -> Sweep:
    """Queue the body's sweep (422 naming the field, 429 when the queue is full); the sweep as stored."""
    validate_sweep(body, settings)
    try:
        return enqueue_sweep(
            session,
            model=body.model,
            base={"preset": body.base.preset, **body.base.overrides()},
            space={name: dimension.model_dump(exclude_none=True) for name, dimension in body.space.items()},
            trials=body.trials,
            max_concurrent=body.max_concurrent,
            search=body.search,
            early_stop=body.early_stop,
            promote=body.promote,
            max_failures=body.max_failures,
            max_queued=settings.max_queued_jobs,
        )
    except QueueFullError as exc:
        raise queue_full(exc, QUEUE_FULL_RETRY_AFTER_SECONDS) from None


def validate_sweep(body: SweepRequest, settings: Settings) -> None:
    """The sweep as the runner would run it: base and every dimension checked by the one config model, then the
    server's budget on every configuration a trial could get (422 naming the field: `space.hidden_size.choice[2]`)."""
    preset, base = body.base.preset, body.base.overrides()
    try:
        base_config = body.base.resolved_config()
    except ValidationError as exc:  # the base alone breaks a cross-field rule
        errors = [{**error, "loc": ("body", "base", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None
    check_training_budget(base_config, settings, preset=preset, given=base.keys(), locate=_in_base)
    try:
        points = check_space(preset, base, body.space, search=body.search)
    except SpaceError as exc:
        raise field_error(exc.field, exc.message) from None
    for point in points:
        given = {*base, point.name}
        check_training_budget(point.config, settings, preset=preset, given=given, locate=_space_field(point))
    if body.trials > settings.sweep_max_trials:
        raise field_error("trials", f"must be at most {settings.sweep_max_trials} on this server, got {body.trials}")
    if body.search == "grid" and body.trials != grid_size(body.space):
        raise field_error("trials", f"a grid search runs its {grid_size(body.space)} combinations: set trials to that")


def _in_base(field: str) -> str:
    return f"base.{field}"


def _space_field(point: SpacePoint) -> Callable[[str], str]:
    """A budget error about the searched field names the dimension's value; any other is the base's."""
    return lambda budget_field: point.field if budget_field == point.name else _in_base(budget_field)
