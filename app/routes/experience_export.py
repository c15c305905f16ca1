"""A model's recorded experience as an offline-RL dataset: a Minari archive or one Parquet file."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.routes.deps import DatabaseDep, ModelNameParam, SessionDep
from app.schemas.errors import BINARY_SCHEMA, error_responses
from app.services import model_registry
from app.services.experience_export import ExportFormat, build_export
from models.experience_export import ARCHIVE_MEDIA_TYPE, PARQUET_MEDIA_TYPE

router = APIRouter(prefix="/models", tags=["experience"])

_MINARI = (
    "format=minari: a tar.gz of the Minari dataset `ddpg-service/<model>/recorded-v0` (arrow storage) holding every "
    "recorded episode that has ended, each exactly as recorded. Unpack it into a Minari datasets directory and load "
    "it: `tar -xzf <file> -C ~/.minari/datasets` then `minari.load_dataset('ddpg-service/<model>/recorded-v0')`. "
    "Headers X-Experience-Episodes, X-Experience-Transitions and X-Experience-Skipped-Episodes (episodes left out: "
    "not ended yet, steps missing) say what it holds."
)
_PARQUET = (
    "format=parquet: one Parquet file, a row per recorded transition (every one, including episodes not ended yet) "
    "with the columns observation, action, reward, next_observation, terminated, truncated, policy_id, session, "
    "episode, step, noise, noise_scale, time."
)

FormatQuery = Annotated[
    ExportFormat, Query(description="`minari` (a tar.gz of a Minari dataset) or `parquet` (one Parquet file).")
]


@router.get(
    "/{name}/experience/dataset",
    response_class=FileResponse,
    responses={
        200: {
            "description": f"{_MINARI} {_PARQUET}",
            "headers": {
                "X-Experience-Transitions": {
                    "description": "Transitions in the file.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "X-Experience-Episodes": {
                    "description": "format=minari: the episodes in the dataset.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "X-Experience-Skipped-Episodes": {
                    "description": "format=minari: episodes left out, by reason, e.g. "
                    "`not_ended=1,missing_steps=0,after_end=0`.",
                    "schema": {"type": "string"},
                },
                "X-Minari-Dataset-Id": {
                    "description": "format=minari: the id to load, e.g. `ddpg-service/pendulum/recorded-v0`.",
                    "schema": {"type": "string"},
                },
            },
            "content": {ARCHIVE_MEDIA_TYPE: {"schema": BINARY_SCHEMA}, PARQUET_MEDIA_TYPE: {"schema": BINARY_SCHEMA}},
        },
        **error_responses(404, 422, 503),
    },
)
def experience_dataset(
    name: ModelNameParam, session: SessionDep, database: DatabaseDep, format: FormatQuery = ExportFormat.minari
) -> FileResponse:
    """The model's recorded experience as a dataset file (404 naming `name` for an unknown model or no recordings)."""
    # A sync endpoint on purpose: reading and encoding every chunk blocks, so it runs in the thread pool.
    model = model_registry.model_or_404(session, name)
    built = build_export(session, model, format, database.chunk_storage)
    return FileResponse(
        built.path,
        media_type=built.media_type,
        filename=built.filename,
        headers=built.headers,
        background=BackgroundTask(built.remove),
    )
