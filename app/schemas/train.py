"""The body of POST /train, derived field by field from the one training config (`models.training_config`).

Every hyperparameter is optional (unset ones come from the preset) and keeps the config's type, bounds and
description, so the OpenAPI document, the CLI's `--help` and the trainer's validation say the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from app.schemas.models import ModelName
from models.training_config import PresetName, PromoteRule, TrainingConfig, config_from_job

# The model decides the environment: optional_config_fields leaves it out (a sweep's base never sets it), and
# POST /train adds it back as the environment of a model created on first use.
_NOT_IN_BODY = frozenset({"env_id"})


class _TrainRequestBase(BaseModel):
    """Hyperparameters of a DDPG training job: all optional, unset ones come from `preset`.

    Names are the trainer's (`python -m trainer train --help`). Static bounds are below; the server also
    enforces its configured budget (TRAIN_MAX_EPISODES, TRAIN_MAX_HIDDEN_SIZE, TRAIN_MAX_BATCH_SIZE,
    TRAIN_MAX_REPLAY_SIZE, TRAIN_MAX_EPISODE_STEPS) on the resulting config.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    preset: PresetName = Field("default", description="`seed` reproduces the tutorial; `default` is tuned.")
    promote: PromoteRule = Field(
        "if_better",
        description="`if_better`: becomes its model's champion only if it evaluates better than the current "
        "champion; `always`; `never`.",
    )
    model: ModelName | None = Field(
        None,
        description="The named model the trained policy joins (created on first use, for `env_id`); DEFAULT_MODEL "
        "when absent.",
    )

    @property
    def requested_env_id(self) -> str | None:
        """The `env_id` the client asked for, if any (the field is added with the config's other fields)."""
        value = getattr(self, "env_id", None)
        return value if isinstance(value, str) else None

    def trainer_config(self) -> dict[str, Any]:
        """The job's config as stored for the worker: the preset plus only the fields the client set."""
        return self.model_dump(exclude={"promote", "model"}, exclude_none=True)

    def resolved_config(self) -> TrainingConfig:
        """The full config the worker will train with; pydantic's ValidationError (located at the field) if the
        combination is invalid, e.g. a replay_size below the preset's batch_size."""
        return config_from_job(self.trainer_config())


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The config field with the same type, bounds and description, but optional (None: take the preset's)."""
    annotation: Any = info.annotation
    return annotation | None, FieldInfo.merge_field_infos(info, default=None)


def optional_config_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """Every config field a body may set, optional: the fields of POST /train and of a sweep's `base`."""
    return {name: _optional(info) for name, info in TrainingConfig.model_fields.items() if name not in _NOT_IN_BODY}


if TYPE_CHECKING:  # type checkers see the base (its methods); FastAPI and OpenAPI see every field
    TrainRequest = _TrainRequestBase
else:
    TrainRequest = create_model(
        "TrainRequest",
        __base__=_TrainRequestBase,
        __doc__=_TrainRequestBase.__doc__,
        env_id=_optional(TrainingConfig.model_fields["env_id"]),
        **optional_config_fields(),
    )
