"""`python -m trainer import FILE --model NAME`: a policy trained elsewhere (an SB3 zip, a CleanRL actor, an ONNX
MLP, our own file) into a model of the registry, the same way POST /models/{name}/policies does it.

The file is read by the same torch-free readers as the API (models.imports): never unpickled, even here where torch
is at hand, so a file refused over HTTP is refused here too, with the same message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from models.imports.errors import ImportRefusedError
from models.imports.upload import ModelSpaces, parse_obs_normalization, read_upload
from models.registry_vocabulary import CLIENT_ENV_PREFIX
from models.weights import WeightsFormatError
from store.db import create_db_engine, make_session_factory, migrate
from store.policies import PolicyModelMismatchError, register_policy
from store.registry import champion_of, get_model

logger = logging.getLogger(__name__)

# As the API's default MAX_UPLOAD_BYTES (64 MiB), and how far a zip may inflate past it (app.services.policy_imports).
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 4 * MAX_FILE_BYTES


class ImportCommandError(Exception):
    """The import did not happen; the message says why (the file's field at fault, or the model)."""


@dataclass(frozen=True)
class ImportedRow:
    policy_id: int
    model: str
    origin: str
    champion: bool


def import_policy_file(
    path: Path,
    *,
    model: str,
    database_url: str,
    obs_normalization: str | None = None,
    promote: str = "if_better",
) -> ImportedRow:
    """Read, check and register the policy in `path` as a version of `model`; nothing is stored on any error."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImportCommandError(f"{path}: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise ImportCommandError(f"{path}: {size} bytes is over the limit of {MAX_FILE_BYTES}")
    data = path.read_bytes()
    migrate(database_url)
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            found = get_model(session, model)
            if found is None:
                raise ImportCommandError(f"--model: no model named {model!r} (create it with POST /models)")
            spaces = ModelSpaces.from_stored(found.env_id or f"{CLIENT_ENV_PREFIX}{found.name}", found.spaces)
            try:
                imported = read_upload(
                    data,
                    spaces=spaces,
                    obs_normalization=parse_obs_normalization(obs_normalization),
                    max_uncompressed=MAX_UNCOMPRESSED_BYTES,
                    source_name=path.name,
                )
                policy = register_policy(session, weights=imported.weights, promote=promote, model_id=found.id)
            except ImportRefusedError as exc:
                raise ImportCommandError(f"{path}: {exc}") from None
            except (PolicyModelMismatchError, WeightsFormatError) as exc:
                raise ImportCommandError(f"{path}: {exc}") from None
            session.flush()
            champion = champion_of(session, found.id) == policy.id
            session.commit()
            return ImportedRow(policy.id, model, imported.origin, champion)
    finally:
        engine.dispose()
