"""POST /train: queue a DDPG training job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.infra.errors import ApiError, field_error
from app.jobs.budget import check_training_budget
from app.routes.deps import ApiKeyDep, SessionDep, SettingsDep, require_json_content_type
from app.schemas.errors import error_responses
from app.schemas.jobs import JobOut
from app.schemas.train import TrainRequest
from models.env_spaces import EnvironmentUnsupportedError, describe_env
from models.training_config import TrainingConfig
from store.jobs import QueueFullError, enqueue_job
from store.registry import ModelExistsError, RegistryInputError, create_model, get_model
from store.tables import Model

router = APIRouter(prefix="/train", tags=["jobs"])

QUEUE_FULL_RETRY_AFTER_SECONDS = 30


def resolve_config(request: TrainRequest) -> TrainingConfig:
    """The config the worker will run, validated as a whole by the trainer's own model (422 naming the field)."""
    try:
        return request.resolved_config()
    except ValidationError as exc:
        # Located like the body's own errors, so the one error handler names the field.
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


@router.post(
    "",
    response_model=JobOut,
    status_code=202,
    dependencies=[ApiKeyDep, Depends(require_json_content_type)],
    responses={
        202: {
            "description": "Queued; `Location` is the job's URL.",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        # 400: a body that is not even text (FastAPI cannot decode it), before it is parsed as JSON.
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    },
)
def train(body: TrainRequest, session: SessionDep, settings: SettingsDep, response: Response) -> JobOut:
    """Queue a training job for a model (hyperparameters optional, from a preset); 202 with `Location: /jobs/{id}`.

    The model is created on first use, for `env_id` (Pendulum-v1 when absent); a model that exists trains on its own
    environment. An unknown environment, or one without Box observations and actions, is a 422 before anything is
    stored; the model and the job are committed together, so a full queue leaves no new model behind.
    """
    config = resolve_config(body)
    check_training_budget(config, body, settings)
    model = model_for_job(session, body.model or settings.default_model, body.requested_env_id, config.env_id)
    stored = body.trainer_config()
    if config.env_id != model.env_id:  # the model's environment, when the preset's is another (the job must say so)
        stored["env_id"] = model.env_id
    try:
        job = enqueue_job(
            session, config=stored, promote=body.promote, max_queued=settings.max_queued_jobs, model_id=model.id
        )
    except QueueFullError as exc:
        raise ApiError(
            429, "queue_full", str(exc), headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)}
        ) from None
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job)


def model_for_job(session: Session, name: str, requested_env: str | None, env_id: str) -> Model:
    """The job's model: the existing one (whose environment must be the requested one, if any), or a new one for
    `env_id`, added to the session uncommitted."""
    model = get_model(session, name)
    if model is not None:
        if requested_env is not None and requested_env != model.env_id:
            message = f"model {name!r} is for {model.env_id}, not {requested_env}; name another model"
            raise field_error("env_id", message)
        return model
    try:
        spaces = describe_env(env_id)
    except EnvironmentUnsupportedError as exc:
        raise field_error("env_id", str(exc)) from None
    try:
        return create_model(session, name=name, env_id=env_id, spaces=spaces.to_dict())
    except ModelExistsError:  # created by a concurrent request since we looked: train that one
        return model_for_job(session, name, requested_env, env_id)
    except RegistryInputError as exc:
        raise field_error("model" if exc.field == "name" else exc.field, exc.message) from None
