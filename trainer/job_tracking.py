"""A job's mirror in MLflow (when MLFLOW_TRACKING_URI is set): its run, its metrics, its files, its alias.

The worker's own database stays the record: the tracker never fails a job. What it could not do is kept as a
reason that the worker stores on the job (`tracking_error`), next to the run id (`tracking_run_id`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from models.errors import one_line
from models.mlflow_registry import TrackingError, registered_model_name, set_champion_alias
from store.settings import ProcessSettings
from trainer.records import EpisodeRecord, EvaluationRecord, TrainingResult
from trainer.tracking import RunArtifacts, RunOutcome, TrackerGroup
from trainer.tracking.mlflow_tracker import TRACKING_URI_ENV, MlflowTracker

logger = logging.getLogger(__name__)


class JobTracking:
    """One job's MLflow run; every method is a no-op when tracking is off or has disabled itself."""

    def __init__(self, job_id: int, settings: ProcessSettings, environ: Mapping[str, str] | None = None) -> None:
        """MLFLOW_TRACKING_URI from `settings`; MLflow's own variables (the experiment...) from `environ`."""
        env = dict(os.environ if environ is None else environ)
        if settings.mlflow_tracking_uri is None:
            env.pop(TRACKING_URI_ENV, None)
        else:
            env[TRACKING_URI_ENV] = settings.mlflow_tracking_uri
        self._job_id = job_id
        self._settings = settings
        self._mlflow = MlflowTracker.from_env(env, run_name=f"job-{job_id}", tags={"job_id": str(job_id)})
        self._group = TrackerGroup([self._mlflow] if self._mlflow is not None else [])
        self._alias_error: str | None = None

    @property
    def run_id(self) -> str | None:
        return self._mlflow.run_id if self._mlflow is not None else None

    @property
    def error(self) -> str | None:
        """Why (part of) this job is not in MLflow, or None."""
        if self._mlflow is None:
            return None
        return self._mlflow.disabled_reason or self._alias_error

    @property
    def enabled(self) -> bool:
        return self._mlflow is not None

    def start(self, config: Mapping[str, object]) -> None:
        self._group.start(config)

    def progress(self, episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> None:
        self._group.log_progress(episode, evaluation)

    def succeeded(self, result: TrainingResult, config: Mapping[str, object], *, champion_of: str | None) -> None:
        """Upload the run's files, end the run, and point the `champion` alias at it if the job's policy is now the
        champion of its model (`champion_of`: that model's name), on that model's registered model."""
        if self._mlflow is None:
            return
        if self._mlflow.enabled:
            title = f"DDPG job {self._job_id} on {config.get('env_id', '?')}"
            self._group.finish(
                RunArtifacts.from_training(result.actor_bytes, config, result.episodes, result.evaluations, title=title)
            )
        self._group.close("finished")
        if champion_of is not None and self._mlflow.enabled and self.run_id is not None:
            self._set_champion(champion_of)

    def ended(self, outcome: RunOutcome) -> None:
        self._group.close(outcome)

    def _set_champion(self, model: str) -> None:
        assert self._mlflow is not None and self.run_id is not None
        registered = registered_model_name(
            model,
            default_model=self._settings.default_model,
            default_registered_model=self._settings.mlflow_registered_model,
        )
        try:
            set_champion_alias(self._mlflow.tracking_uri, registered, self.run_id)
        except (TrackingError, ValueError) as exc:
            self._alias_error = f"setting the champion alias failed: {one_line(exc)}"
            logger.warning("job %d: %s", self._job_id, self._alias_error)
