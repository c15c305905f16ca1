"""The settings every process shares (the API, the worker, the sweep runner, `python -m store`), read once from the
environment and validated at start: a bad value stops the process with one line naming it (`load_settings`).

Each process kind has its own class derived from `ProcessSettings` (app.settings.Settings, trainer.settings, and
`StoreSettings` here); command-line flags take their defaults from it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from models.registry_vocabulary import DEFAULT_MODEL_NAME, NAME_PATTERN
from store.db import default_database_url

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SettingsT = TypeVar("SettingsT", bound="ProcessSettings")
SUPPORTED_DATABASES = ("sqlite", "postgresql")
# argparse's own exit code for a bad command line; a bad setting is the same kind of mistake.
BAD_SETTINGS_EXIT = 2

logger = logging.getLogger(__name__)


def _blank_is_unset(value: object) -> object:
    # docker compose's `X=${X:-}` yields an empty string, which must mean "unset", not "the value ''".
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


# A setting whose empty value means unset: `Annotated[str | None, BLANK_IS_UNSET]`.
BLANK_IS_UNSET = BeforeValidator(_blank_is_unset)


class ProcessSettings(BaseSettings):
    """Environment variables every process reads (names are the field names in upper case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    data_dir: Path = Field(Path("./data"), description="Directory for the embedded SQLite database.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite under DATA_DIR (store.db.default_database_url)."
    )
    default_model: str = Field(
        DEFAULT_MODEL_NAME,
        pattern=NAME_PATTERN,
        description="The model that answers POST /act without `model` (created by the first policy for it).",
    )
    log_level: LogLevel = Field("INFO", description="Logging level of the process.")
    ray_address: Annotated[str | None, BLANK_IS_UNSET] = Field(
        None, description="The Ray cluster trials and `worker --ray` jobs run on; unset: a local Ray when needed."
    )
    mlflow_tracking_uri: Annotated[str | None, BLANK_IS_UNSET] = Field(
        None, description="MLflow tracking URI; when set, jobs are tracked and a promotion moves `champion` aliases."
    )
    experience_url: Annotated[str | None, BLANK_IS_UNSET] = Field(
        None,
        description="Where recorded-experience chunk bytes go (an fsspec URL: file:///dir, s3://bucket/prefix; "
        "store.chunk_storage); unset: in the database's experience_chunks rows. s3:// reads the AWS_* variables.",
    )
    mlflow_registered_model: str = Field(
        "pendulum",
        min_length=1,
        description="The MLflow registered model whose `champion` alias follows DEFAULT_MODEL (every other model's "
        "alias is on the registered model of its own name).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value:
            check_database_url(value)
        return value

    @field_validator("experience_url")
    @classmethod
    def _check_experience_url(cls, value: str | None) -> str | None:
        if value:
            check_experience_url(value)
        return value

    @model_validator(mode="after")
    def _resolve_database_url(self) -> ProcessSettings:
        if not self.database_url:
            # frozen model: object.__setattr__ is the documented way to finish a derived field in a validator.
            object.__setattr__(self, "database_url", default_database_url(self.data_dir))
        return self


def check_database_url(value: str) -> str:
    """The URL itself, or ValueError saying what a valid one looks like (also an argparse `type`)."""
    shape = "a SQLAlchemy URL like sqlite:///path or postgresql+psycopg://user@host/db"
    if "://" not in value:
        raise ValueError(f"DATABASE_URL must be {shape}, got {value!r}")
    try:
        backend = make_url(value).get_backend_name()
    except ArgumentError:
        raise ValueError(f"DATABASE_URL must be {shape}, got {value!r}") from None
    if backend not in SUPPORTED_DATABASES:
        raise ValueError(f"DATABASE_URL must be {shape} (sqlite or postgresql), got a {backend} URL")
    return value


def check_experience_url(value: str) -> str:
    """The URL itself, or ValueError unless it names a storage fsspec knows (file://, s3://, gs://, ...)."""
    import fsspec

    protocol, _path = fsspec.core.split_protocol(value)
    if protocol is None or "://" not in value:
        raise ValueError(
            f"EXPERIENCE_URL must be an fsspec URL like file:///var/lib/experience or s3://bucket/prefix, got {value!r}"
        )
    if protocol not in fsspec.available_protocols():
        raise ValueError(f"EXPERIENCE_URL: fsspec knows no storage {protocol!r}")
    return value


class StoreSettings(ProcessSettings):
    """`python -m store`: the database to migrate or ping, and the log level."""


def settings_problems(exc: ValidationError) -> str:
    """Every problem on one line, each at its environment variable: `DATABASE_URL: DATABASE_URL must be ...`."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])).upper() or 'settings'}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """The settings from the environment (`overrides`, e.g. command-line flags, win); on a bad value log one line
    naming it and exit BAD_SETTINGS_EXIT, with no traceback: this is configuration, not a fault."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(levelname)s %(message)s")
        logger.error("invalid settings: %s", settings_problems(exc))
        sys.exit(BAD_SETTINGS_EXIT)


def with_flags(settings: SettingsT, **flags: object) -> SettingsT:
    """The settings with the command line's values where they differ (flags default to the settings), validated
    the same way: a bad `--database-url` stops the process as a bad DATABASE_URL does."""
    changed = {name: value for name, value in flags.items() if value != getattr(settings, name)}
    return load_settings(type(settings), **changed) if changed else settings
