"""Plain jobs on Ray (`python -m trainer worker --ray`): the worker claims a job from the queue as always, and a
Ray task on any node of the cluster runs it under the same worker id (so every write passes the lease checks), so
one Ray cluster can carry all training, sweeps and single jobs alike.

The task writes episodes and heartbeats itself, with the worker's recorder (trainer.job_recorder). If its process
or node dies, the job's lease expires and the job ends as any job whose worker died (failed, or requeued when it
has attempts left); Ray does not retry the task.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from models.errors import one_line
from store import jobs
from trainer.claim_loop import Database
from trainer.worker import SHUTDOWN_REASON, Worker, WorkerOptions

logger = logging.getLogger(__name__)

WAIT_SECONDS = 1.0


# mypy does not follow ray (pyproject.toml), so its decorator is untyped; the function's own types are still checked.
@ray.remote(num_cpus=1, max_retries=0)  # type: ignore[untyped-decorator]
def _run_job_task(options: WorkerOptions, job_id: int, config: dict[str, Any]) -> str:
    Worker(options).run_claimed_job(job_id, config)
    return str(ray.get_runtime_context().get_node_id())


def run_on_ray(options: WorkerOptions, job_id: int, config: dict[str, Any], *, stop: threading.Event) -> None:
    """Run the claimed job as a Ray task and wait for it; on stop, cancel the task and give the job back."""
    if not ray.is_initialized():
        ray.init(address=options.ray_address, logging_level=logging.WARNING, log_to_driver=False)
    ref = _run_job_task.remote(options, job_id, config)
    while True:
        ready, _ = ray.wait([ref], timeout=WAIT_SECONDS)
        if ready:
            try:
                node = ray.get(ref)
            except Exception as exc:  # the task's process or node died: its lease expires like any worker's
                logger.error("job %d: the Ray task ended without finishing the job (%s)", job_id, one_line(exc))
                return
            logger.info("job %d: ran on Ray node %s", job_id, node)
            return
        if stop.is_set():
            ray.cancel(ref, force=True)
            _release(options, job_id)
            return


def _release(options: WorkerOptions, job_id: int) -> None:
    try:
        Database.connect(options.database_url).call(
            lambda s: jobs.release_job(s, job_id, worker_id=options.worker_id, reason=SHUTDOWN_REASON)
        )
    except jobs.LeaseLostError as exc:
        logger.info("job %d: already ended (%s)", job_id, exc)
