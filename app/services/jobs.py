"""Submit a training job: the config resolved and checked against the server's budget, its model found or created,
and the job queued, the model and the job committed together (a full queue leaves no new model behind)."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.schemas.train import TrainRequest
from app.services.budget import check_training_budget
from app.services.model_registry import find_or_create_model
from app.services.queue import queue_full
from app.settings import Settings
from models.training_config import TrainingConfig
from store.jobs import QueueFullError, enqueue_job
from store.tables.work_queues import Job

QUEUE_FULL_RETRY_AFTER_SECONDS = 30


def submit_job(session: Session, settings: Settings, body: TrainRequest) -> Job:
    """Queue the body's job (422 naming the field, 429 when the queue is full); the job as stored."""
    config = resolve_config(body)
    check_training_budget(config, settings, preset=body.preset, given=body.trainer_config().keys())
    model = find_or_create_model(session, body.model or settings.default_model, body.requested_env_id, config.env_id)
    stored = body.trainer_config()
    if config.env_id != model.env_id:  # the model's environment, when the preset's is another (the job must say so)
        stored["env_id"] = model.env_id
    try:
        return enqueue_job(
            session, config=stored, promote=body.promote, max_queued=settings.max_queued_jobs, model_id=model.id
        )
    except QueueFullError as exc:
        raise queue_full(exc, QUEUE_FULL_RETRY_AFTER_SECONDS) from None


def resolve_config(body: TrainRequest) -> TrainingConfig:
    """The config the worker will run, validated as a whole by the trainer's own model (422 naming the field)."""
    try:
        return body.resolved_config()
    except ValidationError as exc:
        # Located like the body's own errors, so the one error handler names the field.
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None
