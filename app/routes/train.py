"""POST /train: queue a DDPG training job."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.routes.deps import JSON_WRITE, SessionDep, SettingsDep
from app.schemas.errors import queued_responses
from app.schemas.jobs import JobOut
from app.schemas.train import TrainRequest
from app.services.jobs import submit_job

router = APIRouter(prefix="/train", tags=["jobs"])


@router.post("", response_model=JobOut, status_code=202, dependencies=JSON_WRITE, responses=queued_responses("job"))
def train(body: TrainRequest, session: SessionDep, settings: SettingsDep, response: Response) -> JobOut:
    """Queue a training job for a model (hyperparameters optional, from a preset); 202 with `Location: /jobs/{id}`.

    The model is created on first use, for `env_id` (Pendulum-v1 when absent); a model that exists trains on its own
    environment. An unknown environment, or one without Box observations and actions, is a 422 before anything is
    stored; the model and the job are committed together, so a full queue leaves no new model behind.
    """
    job = submit_job(session, settings, body)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job)
