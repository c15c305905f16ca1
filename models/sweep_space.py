"""A sweep's search space over the one training config, and the sweep vocabulary (search kinds, early stopping).

Torch- and Ray-free, in the bottom layer: the API validates a `POST /sweeps` body with it, the store checks its
columns against the vocabulary, and the sweep runner turns it into a Ray Tune search space. The space never
restates a config bound: each dimension is checked by building configs with `make_config` at its
representative values (both bounds and a point inside for a range, every option of a choice).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.config import JsonDict

from models.training_config import FIELD_NAMES, TrainingConfig, describe_errors, make_config

SearchKind = Literal["tpe", "random", "grid"]
EarlyStopRule = Literal["asha"]
DimensionKind = Literal["loguniform", "uniform", "randint", "choice"]

SEARCH_KINDS: tuple[SearchKind, ...] = get_args(SearchKind)
EARLY_STOP_RULES: tuple[EarlyStopRule, ...] = get_args(EarlyStopRule)
DIMENSION_KINDS: tuple[DimensionKind, ...] = get_args(DimensionKind)

# Fields a sweep may not vary: the environment is the model's, not a hyperparameter.
NOT_SEARCHABLE = frozenset({"env_id"})
SEARCHABLE_FIELDS: tuple[str, ...] = tuple(name for name in FIELD_NAMES if name not in NOT_SEARCHABLE)
MAX_CHOICES = 100
# Every combination of the dimensions' representative values is validated as a whole (cross-field rules such as
# replay_size >= batch_size) while there are at most this many; past that, each dimension alone.
MAX_COMBINATIONS_CHECKED = 4096

ChoiceValue = int | float | str | bool | None


# `_exactly_one` in JSON Schema: one branch per kind, that key given and the others absent or null (as pydantic reads
# them), so the OpenAPI document refuses `{}` or two kinds just as the validator does.
_EXACTLY_ONE_KIND: JsonDict = {
    "oneOf": [
        {
            "required": [kind],
            "properties": {
                other: {"type": "array"} if other == kind else {"type": "null"} for other in DIMENSION_KINDS
            },
        }
        for kind in DIMENSION_KINDS
    ]
}


class Dimension(BaseModel):
    """One hyperparameter's distribution: exactly one of the four keys.

    `loguniform` / `uniform`: [low, high], floats sampled in between (log scale: low > 0). `randint`: [low, high],
    integers with both ends included. `choice`: a list of values, one picked per trial (the only kind `grid` takes).
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True, json_schema_extra=_EXACTLY_ONE_KIND
    )

    # Lists, not tuples: strict validation takes a JSON array for a list only.
    loguniform: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high], low > 0: log-uniform floats"
    )
    uniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[low, high]: uniform floats")
    randint: list[int] | None = Field(
        None, min_length=2, max_length=2, description="[low, high]: integers, both ends included"
    )
    choice: list[ChoiceValue] | None = Field(
        None, min_length=1, max_length=MAX_CHOICES, description="the values to pick from"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        given = [kind for kind in DIMENSION_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DIMENSION_KINDS)}, got {len(given)}")
        kind = given[0]
        if kind == "choice":
            return self
        low, high = getattr(self, kind)
        if not low < high if kind != "randint" else not low <= high:
            raise ValueError(f"{kind}: low must be below high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    @property
    def kind(self) -> DimensionKind:
        return next(kind for kind in DIMENSION_KINDS if getattr(self, kind) is not None)

    def representatives(self) -> list[Any]:
        """The values a config is built with to validate this dimension: both bounds and an inner point of a range
        (so an integer field refuses the floats a continuous range would sample), every option of a choice."""
        kind = self.kind
        if kind == "choice":
            return list(self.choice or [])
        low, high = getattr(self, kind)
        if kind == "randint":
            return [low, high]
        middle = (low * high) ** 0.5 if kind == "loguniform" else (low + high) / 2
        return [float(low), float(middle), float(high)]


class SpaceError(ValueError):
    """A space that cannot run: `field` is where (`space.hidden_size.choice[2]`), `message` what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SpacePoint:
    """One representative value of one dimension and the config it makes with the base."""

    field: str  # where an error about it is reported, e.g. `space.hidden_size.choice[2]`
    name: str
    value: Any
    config: TrainingConfig


def check_space(preset: str, base: dict[str, Any], space: dict[str, Dimension], *, search: str) -> list[SpacePoint]:
    """Validate the space against the one config model; return every representative point (for budget checks).

    Raises SpaceError naming the first offending dimension (or `space` for a combination that is invalid as a
    whole, e.g. a batch_size choice above a replay_size choice).
    """
    if not space:
        raise SpaceError("space", "give at least one hyperparameter to search")
    points: list[SpacePoint] = []
    for name, dimension in space.items():
        if name not in SEARCHABLE_FIELDS:
            raise SpaceError(
                f"space.{name}", f"not a searchable config field; choose from {', '.join(SEARCHABLE_FIELDS)}"
            )
        if search == "grid" and dimension.kind != "choice":
            raise SpaceError(f"space.{name}.{dimension.kind}", "a grid search takes only `choice` dimensions")
        for index, value in enumerate(dimension.representatives()):
            field = f"space.{name}.{dimension.kind}[{index}]"
            try:
                config = make_config(preset, **{**base, name: value})
            except ValidationError as exc:
                raise SpaceError(field, describe_errors(exc)) from None
            points.append(SpacePoint(field, name, value, config))
    _check_combinations(preset, base, space)
    return points


def grid_size(space: dict[str, Dimension]) -> int:
    """Trials of a grid search: the product of the choices' lengths."""
    size = 1
    for dimension in space.values():
        size *= len(dimension.choice or [None])
    return size


def _check_combinations(preset: str, base: dict[str, Any], space: dict[str, Dimension]) -> None:
    names = list(space)
    options = [space[name].representatives() for name in names]
    count = 1
    for values in options:
        count *= len(values)
    if len(names) < 2 or count > MAX_COMBINATIONS_CHECKED:
        return
    for combination in itertools.product(*options):
        point = dict(zip(names, combination, strict=True))
        try:
            make_config(preset, **{**base, **point})
        except ValidationError as exc:
            shown = ", ".join(f"{name}={value!r}" for name, value in point.items())
            raise SpaceError("space", f"the combination {shown} is invalid: {describe_errors(exc)}") from None
