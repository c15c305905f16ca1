"""The MLflow model registry's `champion` alias for a promoted actor, from the API and the worker alike.

Torch-free and trainer-free: a promotion in the service and a job promoted by its worker both point the alias of
the registered model at the run that produced the policy, so the MLflow UI shows what serves. Needs only
`mlflow-skinny` (the `mlflow` extra), imported when called.

A server that is down must not hold anything up for minutes: MLflow's HTTP client retries 7 times with exponential
backoff and a 120 s timeout by default. `bound_http_retries` lowers those defaults (unless the environment sets
them) so that a refused connection fails in about 2 s.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

from models.errors import one_line
from models.run_files import ACTOR_FILE

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
INSTALL_HINT = "pip install 'ddpg-policy-service[mlflow]'"
# MLflow reads these per request. Two retries one second apart and a 5 s timeout: a refused connection costs
# ~2 s, a server that accepts but never answers ~15 s, once, before the tracker disables itself.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
# MLflow run ids are hex; checked before one goes into a search filter string.
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class TrackingError(RuntimeError):
    """An MLflow call failed (server unreachable, store error, missing artifact); the message says which."""


def registered_model_name(model: str, *, default_model: str, default_registered_model: str) -> str:
    """The MLflow registered model whose `champion` alias follows the champion of the named model: the model's own
    name, except for the default model (DEFAULT_MODEL), whose registered model is MLFLOW_REGISTERED_MODEL."""
    return default_registered_model if model == default_model else model


def bound_http_retries(environ: MutableMapping[str, str] | None = None) -> None:
    """Set HTTP_DEFAULTS in the environment where it does not set them already (an operator's values win)."""
    target = os.environ if environ is None else environ
    for key, value in HTTP_DEFAULTS.items():
        target.setdefault(key, value)


def set_champion_alias(
    tracking_uri: str,
    model_name: str,
    run_id: str,
    *,
    artifact_path: str = ACTOR_FILE,
    alias: str = CHAMPION_ALIAS,
    registry_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Register the run's actor as a version of `model_name` (created if missing) and point `alias` at it.

    Returns the model version. Promoting the same run again reuses its version instead of adding one. Raises
    TrackingError when the run has no `artifact_path` artifact or MLflow fails; the caller (a promotion) decides
    whether that matters. Torch-free, for the API process; HTTP retries bounded as in `bound_http_retries`.
    """
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"not an MLflow run id: {run_id!r}")
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise TrackingError(f"mlflow is not installed ({INSTALL_HINT})") from exc

    bound_http_retries()
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
        artifact_names = {info.path for info in client.list_artifacts(run_id)}
        if artifact_path not in artifact_names:
            raise TrackingError(f"run {run_id} has no artifact {artifact_path!r} (has {sorted(artifact_names)})")
        source = f"runs:/{run_id}/{artifact_path}"
        version = _existing_version(client, model_name, run_id, source)
        if version is None:
            _ensure_registered_model(client, model_name)
            version = client.create_model_version(model_name, source, run_id=run_id, tags=dict(tags or {})).version
        client.set_registered_model_alias(model_name, alias, str(version))
    except TrackingError:
        raise
    except Exception as exc:  # MlflowException, requests' errors, SQL errors: one type for the caller
        raise TrackingError(
            f"setting alias {alias!r} of model {model_name!r} to run {run_id}: {one_line(exc)}"
        ) from exc
    logger.info("model %r version %s (run %s) is now %r", model_name, version, run_id, alias)
    return str(version)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as create_exc:
            # Created concurrently by another promotion: fine.
            if create_exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _existing_version(client: MlflowClient, model_name: str, run_id: str, source: str) -> str | None:
    # Filtered by run id only (checked against _RUN_ID, so it needs no quoting); name and source compared here.
    for version in client.search_model_versions(f"run_id='{run_id}'"):
        if version.name == model_name and version.source == source:
            return str(version.version)
    return None
