"""The server's training budget (TRAIN_MAX_*) on a config a job or a sweep trial would run: one check for both."""

from __future__ import annotations

from collections.abc import Callable, Collection

from app.infra.errors import field_error
from app.settings import Settings
from models.training_config import TrainingConfig


def check_training_budget(
    config: TrainingConfig,
    settings: Settings,
    *,
    preset: str,
    given: Collection[str],
    locate: Callable[[str], str] = str,
) -> None:
    """The server's configured limits (TRAIN_MAX_*) on the config the job would run, preset values included.

    `given` names the fields the body set (a value over the limit from elsewhere is said to come from `preset`);
    `locate` turns a config field into where the body holds it, for the 422 (a sweep's `base.hidden_size`).
    """
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
            source = "" if name in given else f" (from preset {preset!r})"
            raise field_error(locate(name), f"must be at most {limit} on this server, got {value}{source}")
