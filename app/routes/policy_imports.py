"""Policies trained elsewhere, uploaded into a model: Stable-Baselines3 zips, CleanRL actors, ONNX graphs, our files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.routes.deps import ApiKeyDep, ModelNameParam, PolicyCacheDep, SessionDep, SettingsDep
from app.schemas.errors import error_responses
from app.schemas.policies import PolicyOut
from app.services import policy_imports
from models.training_config import PROMOTE_RULES, PromoteRule

router = APIRouter(prefix="/models", tags=["models"])

# The upload route's path, for the body limit middleware (MAX_UPLOAD_BYTES instead of MAX_BODY_BYTES).
POLICY_UPLOAD_PATH = r"/models/[^/]+/policies"

_FILE = (
    "The policy: a Stable-Baselines3 `.zip` (TD3, DDPG, SAC, PPO or A2C; MlpPolicy; Box spaces), a CleanRL DDPG/TD3 "
    "actor state dict (safetensors or a weights-only torch file), an ONNX MLP, or one of this service's safetensors "
    "files. What it is comes from its bytes. Pickles are refused unread."
)
_NORMALIZATION = (
    'VecNormalize\'s observation statistics as JSON: `{"mean": [...], "var": [...], "clip": 10.0, "epsilon": 1e-8}` '
    "(`obs_rms.mean`, `obs_rms.var`, `clip_obs`, `epsilon`); applied before the network and kept in the stored policy."
)
_PROMOTE = f"When the upload becomes the champion: {', '.join(PROMOTE_RULES)} (if_better: when the model has none)."


@router.post(
    "/{name}/policies",
    response_model=PolicyOut,
    status_code=201,
    dependencies=[ApiKeyDep],
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def import_policy(
    name: ModelNameParam,
    file: Annotated[UploadFile, File(description=_FILE)],
    *,
    session: SessionDep,
    settings: SettingsDep,
    cache: PolicyCacheDep,
    obs_normalization: Annotated[str | None, Form(description=_NORMALIZATION, max_length=1 << 20)] = None,
    promote: Annotated[PromoteRule, Form(description=_PROMOTE)] = "if_better",
) -> PolicyOut:
    """Import a policy trained elsewhere into the model (multipart: `file`, optional `obs_normalization`, `promote`);
    its spaces must match the model's. Nothing is stored when anything is refused (422 naming the field)."""
    data = await file.read()
    return await policy_imports.import_policy(
        session,
        cache,
        settings,
        name=name,
        data=data,
        filename=file.filename,
        obs_normalization=obs_normalization,
        promote=promote,
    )
