"""The server's training budget (TRAIN_MAX_*) on a config a job or a sweep trial would run: one check for both."""

from __future__ import annotations

from app.infra.errors import field_error
from app.schemas.train import TrainRequest
from app.settings import Settings
from models.training_config import TrainingConfig


def check_training_budget(config: TrainingConfig, request: TrainRequest, settings: Settings) -> None:
    """The server's configured limits (TRAIN_MAX_*) on the config the job would run, preset values included."""
    limits = {
        "episodes": settings.train_max_episodes,
        "max_episode_steps": settings.train_max_episode_steps,
        "hidden_size": settings.train_max_hidden_size,
        "batch_size": settings.train_max_batch_size,
        "replay_size": settings.train_max_replay_size,
    }
    for name, limit in limits.items():
        value = getattr(config, name)
        if value is not None and value > limit:
            source = "" if getattr(request, name) is not None else f" (from preset {request.preset!r})"
            raise field_error(name, f"must be at most {limit} on this server, got {value}{source}")
