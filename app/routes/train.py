"""POST /train: queue a DDPG training job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.infra.errors import ApiError
from app.jobs.budget import check_training_budget
from app.routes.deps import ApiKeyDep, SessionDep, SettingsDep, require_json_content_type
from app.schemas.errors import error_responses
from app.schemas.jobs import JobOut
from app.schemas.train import TrainRequest
from models.training_config import TrainingConfig
from store.jobs import QueueFullError, enqueue_job

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
    """Queue a training job (hyperparameters optional, from a preset); 202 with `Location: /jobs/{id}`."""
    check_training_budget(resolve_config(body), body, settings)
    try:
        job = enqueue_job(
            session, config=body.trainer_config(), promote=body.promote, max_queued=settings.max_queued_jobs
        )
    except QueueFullError as exc:
        raise ApiError(
            429, "queue_full", str(exc), headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)}
        ) from None
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job)
