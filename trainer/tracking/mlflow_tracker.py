"""A training run as an MLflow run, and the registry's `champion` alias for a promoted actor.

Enabled by `MLFLOW_TRACKING_URI` (any URI MLflow takes: `http://host:5000` for a tracking server,
`sqlite:///path/mlflow.db` for a local store; `MLFLOW_EXPERIMENT_NAME` picks the experiment). The run holds:
- params: the training config, one param per field;
- metrics, each with step = cumulative env steps: `episode/return`, `episode/avg_return_10` per episode,
  `evaluation/mean_return`, `evaluation/std_return` per evaluation, and `exported/eval_mean_return` at the end;
- artifacts at the end: actor.safetensors, actor.onnx, rewards.png, config.json; tag `actor_sha256` names the
  policy as the service's registry does.

Needs only `mlflow-skinny` (the `mlflow` extra). The registry side (the `champion` alias a promotion sets) is
`models.mlflow_registry`, which the API process uses too. A local `sqlite:` store also needs SQLAlchemy and
Alembic, which the service depends on anyway; the `file:` store is refused by MLflow 3 unless
MLFLOW_ALLOW_FILE_STORE is set.

A server that is down must not hold training up for minutes: MLflow's HTTP client retries 7 times with
exponential backoff and a 120 s timeout by default. `bound_http_retries` lowers those defaults (unless the
environment sets them) so that a refused connection fails in about 2 s, and the tracker then disables itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import one_line
from models.mlflow_registry import INSTALL_HINT, bound_http_retries
from trainer.tracking.artifacts import RunArtifacts
from trainer.tracking.base import (
    EPISODE_AVG_RETURN_10,
    EPISODE_RETURN,
    EVAL_MEAN_RETURN,
    EVAL_STD_RETURN,
    EpisodeLike,
    EvaluationLike,
    GuardedTracker,
    RunOutcome,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_NAME_ENV = "MLFLOW_EXPERIMENT_NAME"
ARTIFACT_LOCATION_ENV = "MLFLOW_ARTIFACT_LOCATION"
DEFAULT_EXPERIMENT_NAME = "ddpg"
EXPORTED_EVAL_MEAN_RETURN = "exported/eval_mean_return"
ACTOR_SHA256_TAG = "actor_sha256"

_STATUS = {"finished": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
# MLflow's limit on one param value; config values are far shorter, this only keeps a log_batch from failing.
_MAX_PARAM_LENGTH = 6000


class MlflowTracker(GuardedTracker):
    """One training run as one MLflow run. Never raises on MLflow failures: see `disabled_reason`."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment_name: str = DEFAULT_EXPERIMENT_NAME,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        artifact_location: str | None = None,
    ) -> None:
        """`artifact_location` applies only when this creates the experiment; otherwise the store's default
        applies (a tracking server's own, or `./mlruns` under the working directory for a local `sqlite:` store).
        """
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self._client: MlflowClient | None = None
        self._closed = False
        self._last_step = 0  # the highest env-steps step logged

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        artifact_location: str | None = None,
    ) -> MlflowTracker | None:
        """A tracker when MLFLOW_TRACKING_URI is set (experiment from MLFLOW_EXPERIMENT_NAME), else None."""
        env = os.environ if environ is None else environ
        uri = env.get(TRACKING_URI_ENV, "").strip()
        if not uri:
            return None
        experiment = env.get(EXPERIMENT_NAME_ENV, "").strip() or DEFAULT_EXPERIMENT_NAME
        # Where a new experiment keeps its files; without it a local store uses ./mlruns under the working directory.
        location = artifact_location or env.get(ARTIFACT_LOCATION_ENV, "").strip() or None
        return cls(uri, experiment_name=experiment, run_name=run_name, tags=tags, artifact_location=location)

    def start(self, config: Mapping[str, Any]) -> None:
        """Create the run in the experiment (created if missing) and log the config as params."""
        if self.run_id is not None:
            raise RuntimeError("MlflowTracker.start called twice")
        try:
            import mlflow  # noqa: F401
        except ImportError:
            self.disable(f"{TRACKING_URI_ENV} is set but mlflow is not installed ({INSTALL_HINT})")
            return
        self.guarded(f"starting an MLflow run at {self.tracking_uri}", lambda: self._start(config))
        if self.run_id is not None:
            logger.info("MLflow run %s in experiment %r at %s", self.run_id, self.experiment_name, self.tracking_uri)

    def log_episode(self, episode: EpisodeLike) -> None:
        self._log_metrics(
            f"logging episode {episode.episode}",
            {EPISODE_RETURN: episode.episode_return, EPISODE_AVG_RETURN_10: episode.avg_return_10},
            episode.env_steps,
        )

    def log_evaluation(self, evaluation: EvaluationLike) -> None:
        self._log_metrics(
            f"logging the evaluation after episode {evaluation.episode}",
            {EVAL_MEAN_RETURN: evaluation.mean_return, EVAL_STD_RETURN: evaluation.std_return},
            evaluation.env_steps,
        )

    def finish(self, artifacts: RunArtifacts) -> None:
        """Upload the files, and tag the run with the actor's sha256 and its evaluation."""
        if self.run_id is None:
            return
        self.guarded("uploading artifacts", lambda: self._finish(artifacts))

    def close(self, outcome: RunOutcome = "finished") -> None:
        """Mark the run FINISHED, FAILED or KILLED (cancelled). A run whose tracking broke midway is marked
        FAILED, one best-effort call, so it does not stay RUNNING on the server forever."""
        if self._closed or self.run_id is None or self._client is None:
            self._closed = True
            return
        self._closed = True
        client, run_id = self._client, self.run_id
        if self.enabled:
            self.guarded("ending the run", lambda: client.set_terminated(run_id, status=_STATUS[outcome]))
            return
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception as exc:  # the backend already failed once; this is only a courtesy to the server
            logger.debug("could not mark MLflow run %s failed: %s", run_id, one_line(exc))

    # --- MLflow calls -------------------------------------------------------------------------------------

    def _start(self, config: Mapping[str, Any]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        bound_http_retries()
        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = _experiment_id(client, self.experiment_name, self.artifact_location)
        run = client.create_run(experiment_id, run_name=self.run_name, tags=self.tags or None)
        self._client, self.run_id = client, run.info.run_id
        params = [Param(str(key), _param_value(value)) for key, value in sorted(config.items())]
        # MLflow takes at most 100 params per batch.
        for offset in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[offset : offset + 100])

    def _log_metrics(self, what: str, values: Mapping[str, float], step: int) -> None:
        if self.run_id is None or self._client is None:
            return
        client, run_id = self._client, self.run_id
        metrics = _metrics(values, step)
        self._last_step = max(self._last_step, step)
        # One request per record: a network round trip per episode is noise next to the episode itself.
        self.guarded(what, lambda: client.log_batch(run_id, metrics=metrics))

    def _finish(self, artifacts: RunArtifacts) -> None:
        from mlflow.entities import RunTag

        assert self._client is not None and self.run_id is not None  # finish() checked run_id; _start set both
        with tempfile.TemporaryDirectory(prefix="mlflow-artifacts-") as tmp:
            artifacts.write_to(Path(tmp))
            self._client.log_artifacts(self.run_id, tmp)
        actor = artifacts.actor_bytes
        if actor is None:
            return
        from models.weights import decode_actor

        tags = [RunTag(ACTOR_SHA256_TAG, hashlib.sha256(actor).hexdigest())]
        eval_mean_return = decode_actor(actor).eval_mean_return
        # At the last step logged, so the exported actor's score sits at the end of the runs' x axis.
        metrics = (
            [] if eval_mean_return is None else _metrics({EXPORTED_EVAL_MEAN_RETURN: eval_mean_return}, self._last_step)
        )
        self._client.log_batch(self.run_id, metrics=metrics, tags=tags)


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:
        # Another worker created it between our lookup and create: use theirs.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _metrics(values: Mapping[str, float], step: int) -> list[Metric]:
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    return [Metric(key, float(value), timestamp, int(step)) for key, value in values.items()]


def _param_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."
