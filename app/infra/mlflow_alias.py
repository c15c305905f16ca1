"""After a promotion, the MLflow registry's `champion` alias follows (when MLFLOW_TRACKING_URI is set).

Best effort and off the request path: the promotion is already committed in our database, which is the record;
an unreachable tracking server costs a warning in the log, never the promotion. The alias points at the MLflow run
of the job that trained the policy (`jobs.tracking_run_id`); a policy with no tracked run has nothing to point at.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.settings import Settings
from models.errors import one_line
from models.mlflow_registry import TrackingError, set_champion_alias
from store.jobs import get_job
from store.tables import Policy

logger = logging.getLogger(__name__)


def champion_run_id(session: Session, policy: Policy) -> str | None:
    """The tracked run that produced `policy`, if any."""
    if policy.source_job_id is None:
        return None
    job = get_job(session, policy.source_job_id)
    return job.tracking_run_id if job is not None else None


def point_champion_alias(settings: Settings, run_id: str | None, policy_id: int) -> None:
    """Set the alias (blocking, bounded retries: call it in a background task). Never raises."""
    if settings.mlflow_tracking_uri is None or run_id is None:
        return
    try:
        set_champion_alias(settings.mlflow_tracking_uri, settings.mlflow_registered_model, run_id)
    except (TrackingError, ValueError) as exc:
        logger.warning("policy %d is the default, but the MLflow champion alias was not moved: %s", policy_id,
                       one_line(exc))  # fmt: skip
