"""Bodies of /sweeps: a sweep request (base config, search space, search and early stopping) and a sweep with its
trials. `base` is derived from the one training config like POST /train's body; each dimension of `space` is
checked by the same config model (models.sweep_space), so no bound is written twice."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from app.schemas.models import ModelName
from app.schemas.train import optional_config_fields
from models.registry_vocabulary import DEFAULT_MODEL_NAME
from models.sweep_space import SEARCHABLE_FIELDS, Dimension, EarlyStopRule, SearchKind
from models.training_config import JobStatus, PresetName, PromoteRule, TrainingConfig, make_config


class _SweepBaseBase(BaseModel):
    """The config every trial starts from: a preset plus overrides (the names of POST /train), all optional."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    preset: PresetName = Field("default", description="`seed` reproduces the tutorial; `default` is tuned.")

    def overrides(self) -> dict[str, Any]:
        """The fields the client set, without the preset."""
        return self.model_dump(exclude={"preset"}, exclude_none=True)

    def resolved_config(self) -> TrainingConfig:
        return make_config(self.preset, **self.overrides())


if TYPE_CHECKING:
    SweepBase = _SweepBaseBase
else:
    SweepBase = create_model(
        "SweepBase", __base__=_SweepBaseBase, __doc__=_SweepBaseBase.__doc__, **optional_config_fields()
    )


class SweepRequest(BaseModel):
    """A hyperparameter sweep: `trials` trials of `base` with the `space`'s fields sampled by `search`."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: ModelName = Field(
        DEFAULT_MODEL_NAME, description="The named model the best trial's policy joins and may be promoted in."
    )
    base: SweepBase = Field(default_factory=SweepBase, description="Config of every trial before sampling.")
    space: dict[str, Dimension] = Field(
        min_length=1,
        max_length=len(SEARCHABLE_FIELDS),
        # Only the config's searchable fields: `{"": {}}` is refused by the document, not only by the code.
        json_schema_extra={"propertyNames": {"enum": list(SEARCHABLE_FIELDS)}},
        description='Config field -> one of {"loguniform": [low, high]}, {"uniform": [low, high]}, '
        '{"randint": [low, high]} (both ends included) or {"choice": [...]}.',
    )
    trials: int = Field(16, ge=1, le=100_000, description="Trials to run (grid: the grid's size, exactly).")
    max_concurrent: int = Field(2, ge=1, le=1024, description="Trials running at once (the cluster's CPUs cap it).")
    search: SearchKind = Field("tpe", description="`tpe` (Optuna), `random`, or `grid` (every choice combination).")
    early_stop: EarlyStopRule | None = Field(None, description="`asha`: stop poor trials at their evaluations.")
    promote: PromoteRule = Field("if_better", description="What the best trial's policy becomes when the sweep ends.")
    max_failures: int = Field(
        1, ge=0, le=10, description="Retries of a trial whose process or node died (Ray Tune's max_failures)."
    )


class SweepTrialOut(BaseModel):
    """One trial: its job (history, events, curve and GIF as for any job) and where and how it ran."""

    job_id: int
    trial_id: str = Field(description="Ray Tune's trial id.")
    status: JobStatus
    params: dict[str, Any] = Field(description="The sampled hyperparameters.")
    config: dict[str, Any] = Field(description="The trial's config: the sweep's base plus `params`.")
    episodes_done: int
    episodes_total: int | None = None
    best_eval_return: float | None = Field(None, description="Best periodic evaluation (what ASHA compares).")
    heldout_return: float | None = Field(None, description="The objective: the exported actor on held-out seeds.")
    heldout_std: float | None = None
    node: str | None = Field(None, description="The Ray node id the trial (its latest attempt) ran on.")
    node_ip: str | None = None
    attempts: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_time: float | None = Field(None, description="Seconds from start to end (or to now, while it runs).")
    policy_id: int | None = None
    error: str | None = None


class SweepOut(BaseModel):
    """A sweep, its trials so far, and the best of them."""

    id: int
    status: JobStatus
    model: str
    base: dict[str, Any]
    space: dict[str, Any]
    trials_planned: int = Field(description="The `trials` of the request.")
    max_concurrent: int
    search: SearchKind
    early_stop: EarlyStopRule | None = None
    promote: PromoteRule
    max_failures: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    error: str | None = None
    trials: list[SweepTrialOut] = Field(default_factory=list, description="Started trials, in start order.")
    best_job_id: int | None = Field(None, description="The trial with the highest held-out return.")
    best: SweepTrialOut | None = Field(None, description="That trial (once the sweep ended with one).")
    policy_id: int | None = Field(None, description="The best trial's policy (promoted by `promote` on success).")

    @model_validator(mode="before")
    @classmethod
    def _read_a_row(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return data
        derived = ("trials", "trials_planned", "best")
        values = {name: getattr(data, name) for name in cls.model_fields if name not in derived}
        return {**values, "trials_planned": data.trials, "trials": [], "best": None}


class SweepList(BaseModel):
    items: list[SweepOut]
    total: int = Field(description="Sweeps matching the filter, over all pages.")
    limit: int
    offset: int
