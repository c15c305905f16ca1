"""Import an uploaded policy into a model: read it (models.imports, never unpickled), check it against the model's
spaces, register it as one of the model's policies, all or nothing.

Reading a file is CPU work of a few to a few hundred milliseconds (a zip, a state dict, an ONNX graph), so it runs
in a thread with the registration; the answer is the stored policy, with its origin (`sb3:TD3 2.3.2`, `cleanrl`,
`onnx`, `trained`).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.infra.errors import ApiError, field_error
from app.schemas.policies import PolicyOut
from app.schemas.registry_views import policy_out
from app.services.model_registry import model_or_404
from app.services.promotion import committed_then_refreshed
from app.serving.policy_cache import PolicyCache
from app.settings import Settings
from models.imports.errors import ImportRefusedError
from models.imports.upload import ModelSpaces, parse_obs_normalization, read_upload
from models.registry_vocabulary import CLIENT_ENV_PREFIX
from models.weights import WeightsFormatError
from store.policies import PolicyModelMismatchError, register_policy

logger = logging.getLogger(__name__)

# How far a zip may inflate, as a multiple of the upload limit: an SB3 zip inflates about 1.1x; a bomb, 1000x.
INFLATE_FACTOR = 4


def refused(exc: ImportRefusedError) -> ApiError:
    """422 naming the field at fault (and the unsupported ONNX operators, when that is the reason)."""
    error = field_error(exc.field, exc.message)
    if exc.unsupported:
        error.details.append({"field": exc.field, "message": f"unsupported operators: {', '.join(exc.unsupported)}"})
    return error


async def import_policy(
    session: Session,
    cache: PolicyCache,
    settings: Settings,
    *,
    name: str,
    data: bytes,
    filename: str | None,
    obs_normalization: str | None,
    promote: str,
) -> PolicyOut:
    """The uploaded policy stored as a version of the model `name` (201), or the refusal with nothing stored."""

    def read_and_register() -> PolicyOut:
        model = model_or_404(session, name)
        spaces = ModelSpaces.from_stored(model.env_id or f"{CLIENT_ENV_PREFIX}{model.name}", model.spaces)
        try:
            normalization = parse_obs_normalization(obs_normalization)
            imported = read_upload(
                data,
                spaces=spaces,
                obs_normalization=normalization,
                max_uncompressed=INFLATE_FACTOR * settings.max_upload_bytes,
                source_name=filename,
            )
        except ImportRefusedError as exc:
            session.rollback()
            logger.info("policy upload for model %r refused: %s", name, exc.field)
            raise refused(exc) from None
        try:
            policy = register_policy(session, weights=imported.weights, promote=promote, model_id=model.id)
        except PolicyModelMismatchError as exc:
            session.rollback()
            raise field_error("spaces", str(exc)) from None
        except WeightsFormatError as exc:
            session.rollback()
            raise field_error("file", str(exc)) from None
        # Read before the commit (as model_registry does): on SQLite a read after it would hold the write lock.
        out = policy_out(session, policy, settings.default_model)
        session.commit()
        logger.info("model %r imported policy %d (%s)", name, policy.id, imported.origin)
        return out

    return await committed_then_refreshed(cache, read_and_register)
