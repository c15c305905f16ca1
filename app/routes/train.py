"""POST /train: queue a DDPG training job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.routes.deps import ApiKeyDep, SessionDep, SettingsDep, require_json_content_type
from app.schemas.errors import error_responses
from app.schemas.jobs import JobOut
from app.schemas.train import TrainRequest
from app.services.jobs import submit_job

router = APIRouter(prefix="/train", tags=["jobs"])


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
    job = submit_job(session, settings, body)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job)
