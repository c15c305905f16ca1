"""GET /models/{name}/experience/dataset: a model's recorded experience as a Minari archive or a Parquet file.

The file is built in a temporary directory (TMPDIR) by the request's thread-pool thread, never on the event loop,
and answered from disk; the directory goes when the response is sent. Memory while building: FETCH_ROWS encoded
chunks and one decoded chunk (store.experience_reading), plus one episode for Minari
(models.experience_export). Exports are heavy and rare, so each process builds at most `MAX_CONCURRENT_EXPORTS` at
once; more get a 503 with Retry-After.
"""

from __future__ import annotations

import enum
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app.infra.errors import ApiError
from models.experience_export import (
    ARCHIVE_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    BoxSpaces,
    minari_dataset_id,
    write_minari_archive,
    write_parquet,
)
from store.chunk_storage import ChunkStorage
from store.experience_reading import ChunkStorageMissingError, chunk_ids, iter_chunks
from store.tables.registry import Model

logger = logging.getLogger(__name__)

MAX_CONCURRENT_EXPORTS = 2
EXPORT_RETRY_AFTER_SECONDS = 10
_exports = threading.BoundedSemaphore(MAX_CONCURRENT_EXPORTS)


class ExportFormat(enum.StrEnum):
    """What GET /models/{name}/experience/dataset answers."""

    minari = "minari"
    parquet = "parquet"


@dataclass(frozen=True, slots=True)
class BuiltExport:
    """An export on disk: the file to send, the directory to remove after sending, and what it holds."""

    path: Path
    directory: Path
    media_type: str
    filename: str
    headers: dict[str, str]

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _env_spec_json(env_id: str | None) -> str | None:
    """The model's environment as gymnasium serializes its spec (for minari's recover_environment), when it has one
    registered here; None for a model whose environment lives with its clients."""
    if env_id is None:
        return None
    import gymnasium

    try:
        return str(gymnasium.spec(env_id).to_json())
    except Exception as exc:  # not registered here any more, or kwargs JSON cannot hold: the data stays exportable
        logger.warning("no env_spec for %s in the Minari export: %s", env_id, exc)
        return None


def _no_experience(model: Model) -> ApiError:
    message = f"model {model.name!r} has no recorded experience"
    return ApiError(404, "no_experience", f"name: {message}", details=[{"field": "name", "message": message}])


def build_export(
    session: Session, model: Model, export_format: ExportFormat, storage: ChunkStorage | None
) -> BuiltExport:
    """The model's recorded experience as a file in `export_format` (blocking: call from a worker thread)."""
    ids = chunk_ids(session, model.id)
    session.rollback()  # the id snapshot is taken; hold no transaction while the chunks are read
    if not ids:
        raise _no_experience(model)
    if not _exports.acquire(blocking=False):
        raise ApiError(
            503,
            "export_busy",
            f"{MAX_CONCURRENT_EXPORTS} exports are being built by this process; retry shortly",
            headers={"Retry-After": str(EXPORT_RETRY_AFTER_SECONDS)},
        )
    directory = Path(tempfile.mkdtemp(prefix="experience-export-"))
    try:
        chunks = iter_chunks(session, ids, storage)
        spaces = model.spaces
        if export_format is ExportFormat.parquet:
            path = directory / f"{model.name}.parquet"
            with path.open("wb") as sink:
                rows = write_parquet(chunks, sink, obs_dim=int(spaces["obs_dim"]), act_dim=int(spaces["act_dim"]))
            return BuiltExport(path, directory, PARQUET_MEDIA_TYPE, path.name, {"X-Experience-Transitions": str(rows)})
        dataset_id = minari_dataset_id(model.name)
        path = directory / f"{model.name}-recorded.tar.gz"
        with path.open("wb") as sink:
            summary = write_minari_archive(
                chunks,
                sink,
                dataset_id=dataset_id,
                spaces=BoxSpaces.from_stored(spaces),
                work_dir=directory / "work",
                description=f"Live sessions served by model {model.name!r} of the DDPG policy service.",
                env_spec_json=_env_spec_json(model.env_id),
            )
        headers = {
            "X-Minari-Dataset-Id": dataset_id,
            "X-Experience-Episodes": str(summary.episodes),
            "X-Experience-Transitions": str(summary.steps),
            "X-Experience-Skipped-Episodes": ",".join(f"{k}={v}" for k, v in summary.skipped.items()),
        }
        return BuiltExport(path, directory, ARCHIVE_MEDIA_TYPE, path.name, headers)
    except ChunkStorageMissingError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise ApiError(503, "experience_storage_unset", str(exc)) from None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        _exports.release()
