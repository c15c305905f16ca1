"""POST /train: queue a DDPG training job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.infra.errors import ApiError, field_error
from app.jobs.presenters import job_out
from app.routes.deps import ApiKeyDep, SessionDep, SettingsDep, require_json_content_type
from app.schemas import JobOut, TrainRequest, error_responses
from app.settings import Settings
from store.jobs import QueueFullError, enqueue_job

router = APIRouter(prefix="/train", tags=["jobs"])

QUEUE_FULL_RETRY_AFTER_SECONDS = 30


def check_training_budget(request: TrainRequest, settings: Settings) -> None:
    """The server's configured limits (TRAIN_MAX_*), on top of the schema's static bounds."""
    limits = {
        "episodes": settings.train_max_episodes,
        "max_episode_steps": settings.train_max_episode_steps,
        "hidden_size": settings.train_max_hidden_size,
        "batch_size": settings.train_max_batch_size,
        "replay_size": settings.train_max_replay_size,
    }
    for name, limit in limits.items():
        value = getattr(request, name)
        if value is not None and value > limit:
            raise field_error(name, f"must be at most {limit} on this server, got {value}")
    if request.batch_size is not None and request.replay_size is not None and request.replay_size < request.batch_size:
        raise field_error(
            "replay_size", f"must be at least batch_size ({request.batch_size}), got {request.replay_size}"
        )


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
    check_training_budget(body, settings)
    try:
        job = enqueue_job(
            session, config=body.trainer_config(), promote=body.promote, max_queued=settings.max_queued_jobs
        )
    except QueueFullError as exc:
        raise ApiError(
            429, "queue_full", str(exc), headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)}
        ) from None
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_out(job)
