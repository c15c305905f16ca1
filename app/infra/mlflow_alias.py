"""After a promotion, the MLflow registry's `champion` alias follows (when MLFLOW_TRACKING_URI is set).

Each named model moves the alias of its own registered model: model N's is the registered model N, except the
default model (DEFAULT_MODEL), whose is MLFLOW_REGISTERED_MODEL (what the alias followed before models had names).
Best effort and off the request path: the promotion is already committed in our database, which is the record;
an unreachable tracking server costs a warning in the log, never the promotion. The alias points at the MLflow run
of the job that trained the policy (`jobs.tracking_run_id`); a policy with no tracked run has nothing to point at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.settings import Settings
from models.errors import one_line
from models.mlflow_registry import TrackingError, registered_model_name, set_champion_alias
from store.jobs import get_job
from store.tables.registry import Model, Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChampionRun:
    """Where the `champion` alias goes after a promotion: the registered model, and the run that trained the policy
    (None: not tracked, nothing to point at)."""

    policy_id: int
    registered_model: str
    run_id: str | None


def champion_run(session: Session, settings: Settings, policy: Policy) -> ChampionRun:
    """Read in the promoting transaction (on SQLite a read after its commit would begin a write-locking one)."""
    model = session.get(Model, policy.model_id) if policy.model_id is not None else None
    name = model.name if model is not None else settings.default_model
    job = get_job(session, policy.source_job_id) if policy.source_job_id is not None else None
    run_id = job.tracking_run_id if job is not None else None
    registered = registered_model_name(
        name, default_model=settings.default_model, default_registered_model=settings.mlflow_registered_model
    )
    return ChampionRun(policy.id, registered, run_id)


def point_champion_alias(settings: Settings, champion: ChampionRun) -> None:
    """Set the alias (blocking, bounded retries: call it in a background task). Never raises."""
    if settings.mlflow_tracking_uri is None:
        return
    if champion.run_id is None:
        # MLflow has no version of this policy to point at; say so rather than leave the old alias unexplained.
        logger.warning("policy %d is %s's champion, but it has no MLflow run (trained without tracking or imported): "
                       "the MLflow champion alias still names the previous version",
                       champion.policy_id, champion.registered_model)  # fmt: skip
        return
    try:
        set_champion_alias(settings.mlflow_tracking_uri, champion.registered_model, champion.run_id)
    except (TrackingError, ValueError) as exc:
        logger.warning("policy %d is %s's champion, but the MLflow champion alias was not moved: %s",
                       champion.policy_id, champion.registered_model, one_line(exc))  # fmt: skip
