"""Bodies of /models/{name}/learner: an online learner's settings (the learning fields of the one training config, how
it publishes and how the model explores while it learns) and its state."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.schemas.experience import MAX_TRANSITIONS_LIMIT, ExploreIn, ExploreOut
from app.schemas.train import optional_config_fields
from models.registry_vocabulary import GUARD_MAX_REGRESSION, GUARD_MIN_EPISODES, LearnerPublishMode
from models.training_config import PresetName, TrainingConfig, config_from_job

# The config fields that apply to learning from recorded experience: the networks, the optimisers, the replay and
# the update-to-data ratio. Episodes, evaluation, the environment and the trainer's own noise do not (the clients
# run the episodes, the service explores).
LEARNING_FIELDS = (
    "seed",
    "hidden_size",
    "actor_lr",
    "critic_lr",
    "gamma",
    "tau",
    "batch_size",
    "replay_size",
    "learning_starts",
    "update_every",
)
DEFAULT_PUBLISH_EVERY = 500
MAX_PUBLISH_EVERY = 10_000_000


class CanaryIn(BaseModel):
    """How a `canary` learner's policies are tried: each publish becomes the challenger of a canary with the guard,
    rolled back on a regression and promoted on live evidence."""

    model_config = ConfigDict(extra="forbid", strict=True)

    percent: float = Field(
        50.0, ge=0, le=100, allow_inf_nan=False, description="Share of sessions the challenger gets."
    )
    min_episodes: int = Field(GUARD_MIN_EPISODES, ge=1, le=1_000_000, description="Live episodes before any verdict.")
    max_regression: float = Field(
        GUARD_MAX_REGRESSION, ge=0, le=1e12, allow_inf_nan=False, description="Roll back when this much worse."
    )
    min_improvement: float | None = Field(
        0.0,
        ge=0,
        le=1e12,
        allow_inf_nan=False,
        description="Promote when the challenger's live return beats the champion's by at least this much, with "
        "min_episodes finished on each side; null: never promote automatically.",
    )


class _LearnerInBase(BaseModel):
    """An online learner for the model: DDPG trained from its recorded session steps, publishing a policy every
    `publish_every` updates. Unset learning fields come from `preset`, as in POST /train."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    preset: PresetName = Field("default", description="Starting hyperparameters: `seed` the tutorial, `default` tuned.")
    publish_every: int = Field(
        DEFAULT_PUBLISH_EVERY, ge=1, le=MAX_PUBLISH_EVERY, description="Gradient updates between published policies."
    )
    publish: LearnerPublishMode = Field(
        "champion",
        description="`champion`: every publish serves new sessions within a second; `canary`: every publish becomes "
        "the challenger of a canary with the guard (see `canary`).",
    )
    canary: CanaryIn = Field(default_factory=CanaryIn, description="The canary of `publish: canary`.")
    explore: ExploreIn | None = Field(
        None,
        description="Exploration while learning, if the model does not explore yet; null: Gaussian with the "
        "preset's noise_sigma for every session.",
    )
    max_transitions: int = Field(
        1_000_000,
        ge=1,
        le=MAX_TRANSITIONS_LIMIT,
        description="The recording's retention, if the model does not record yet.",
    )

    def trainer_config(self) -> dict[str, Any]:
        """The config as stored for the learner: the preset plus only the learning fields the client set."""
        return self.model_dump(include={"preset", *LEARNING_FIELDS}, exclude_none=True)

    def resolved_config(self) -> TrainingConfig:
        """The full config the learner runs; pydantic's ValidationError (located at the field) if it is invalid."""
        return config_from_job(self.trainer_config())


if TYPE_CHECKING:
    LearnerIn = _LearnerInBase
else:
    _FIELDS = optional_config_fields()
    LearnerIn = create_model(
        "LearnerIn",
        __base__=_LearnerInBase,
        __doc__=_LearnerInBase.__doc__,
        **{name: _FIELDS[name] for name in LEARNING_FIELDS},
    )


class CanaryOut(BaseModel):
    percent: float
    min_episodes: int
    max_regression: float
    min_improvement: float | None


class PublishedPolicyOut(BaseModel):
    """A policy the learner published, and what it has returned on live episodes since."""

    policy_id: int
    published_at: datetime
    updates: int = Field(description="The learner's gradient updates when it published.")
    transitions_consumed: int
    role: str = Field(
        description="`champion`; `challenger` (a canary started); `champion_first` (a canary learner's first "
        "policy, with no champion to try it against)."
    )
    live_episodes: int = Field(description="Finished live episodes it served, over every rollout.")
    live_mean_return: float | None


class LearnerOut(BaseModel):
    """An online learner: its settings, where it runs, how far it got, and what it published."""

    model: str
    id: int
    status: str = Field(description="`queued`, `running`, `cancelled` (stopped or replaced) or `failed`.")
    error: str | None = Field(description="Why it ended, or why its last attempt ended (a takeover).")
    attempts: int = Field(description="Times a learner process claimed it: 1 + takeovers.")
    worker_id: str | None = Field(description="The learner process holding it.")
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    config: dict[str, Any] = Field(description="The preset and the learning fields given.")
    publish_every: int
    publish: LearnerPublishMode
    canary: CanaryOut | None
    explore: ExploreOut | None = Field(description="The model's exploration now.")
    transitions_consumed: int
    updates: int
    update_to_data: float | None = Field(description="Achieved gradient updates per consumed transition.")
    lag_transitions: int = Field(description="Recorded transitions not consumed yet (counted at the request).")
    unlearned_transitions: int = Field(
        description="Recorded transitions the learner has not run their updates for yet: `lag_transitions`, those this "
        "API process recorded and has not written yet, and the consumed ones whose updates are still due. What a "
        "client's `drive(max_lag=...)` waits on between episodes."
    )
    lag_seconds: float | None = Field(
        description="Time from the newest consumed transition to the newest recorded one (0: caught up)."
    )
    transitions_per_second: float | None = Field(
        description="Transitions consumed per second since the newest publish at least a second before the last "
        "progress; null when not running or not measured yet."
    )
    updates_per_second: float | None = Field(description="Gradient updates per second, over the same span.")
    progress_at: datetime | None
    publishes: int
    last_publish_at: datetime | None
    last_policy_id: int | None
    policies: list[PublishedPolicyOut] = Field(description="Its published policies, newest first (up to 20).")
