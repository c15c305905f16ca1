"""Every setting of the service, read once from the environment; a bad value stops start-up with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from store.settings import BLANK_IS_UNSET, ProcessSettings


class Settings(ProcessSettings):
    """Environment variables of the API process (names are the field names in upper case). DATA_DIR, DATABASE_URL,
    DEFAULT_MODEL, LOG_LEVEL, RAY_ADDRESS and the MLFLOW_* settings are every process's (store.settings)."""

    host: str = Field("127.0.0.1", description="Address `python -m app` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m app` listens on.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes started by `python -m app`.")
    grpc_port: Annotated[int | None, BLANK_IS_UNSET] = Field(
        None,
        ge=1,
        le=65535,
        description="When set, the Open Inference Protocol over gRPC listens on HOST:GRPC_PORT too (every worker).",
    )
    # Empty (docker compose's `API_KEY=${API_KEY:-}`) means no auth, not the key ''.
    api_key: Annotated[SecretStr | None, BLANK_IS_UNSET] = Field(
        None, description="When set, POST /train, cancel and promote need `Authorization: Bearer <key>`."
    )
    act_api_key: Annotated[SecretStr | None, BLANK_IS_UNSET] = Field(
        None, description="When set, POST /act needs `Authorization: Bearer <key>`."
    )
    policy_file: Annotated[Path | None, BLANK_IS_UNSET] = Field(
        None, description="A policy file (safetensors) registered and promoted at start-up."
    )
    max_batch: int = Field(4096, ge=1, le=1_000_000, description="Most observations one POST /act may carry.")
    max_queued_jobs: int = Field(
        16, ge=1, le=100_000, description="Queued training jobs beyond which POST /train is 429."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest request body accepted; bigger ones get 413."
    )
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=1 << 31,
        description="Largest policy upload (POST /models/{name}/policies) accepted; bigger ones get 413.",
    )
    policy_refresh_seconds: float = Field(
        0.5, gt=0, le=60, description="How often each API process polls the database for a promoted policy."
    )
    policy_lru_size: int = Field(8, ge=1, le=1024, description="Explicitly requested policies kept loaded per process.")
    session_idle_seconds: float = Field(
        300.0, gt=0, le=86_400, description="A session without a request for this long is dropped (its episode lost)."
    )
    max_sessions: int = Field(
        100_000, ge=1, le=10_000_000, description="Live sessions per process; beyond it the least recent is dropped."
    )
    live_stats_flush_seconds: float = Field(
        1.0, gt=0, le=60, description="How often each process writes its summed live returns to the database."
    )
    experience_flush_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each process writes its recorded transitions, as compressed chunks, to the store; "
        "a process that is killed loses at most the transitions completed since its last flush.",
    )
    experience_buffer_transitions: int = Field(
        200_000,
        ge=1,
        le=100_000_000,
        description="Recorded transitions one process holds before they are written; beyond it new ones are "
        "dropped (counted in experience_dropped_transitions_total).",
    )
    lease_expiry_check_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How often each process ends the jobs and sweeps whose worker or runner stopped renewing its "
        "lease (a worker's own lease then fails its job at most this long after the lease ran out).",
    )
    shadow_queue_size: int = Field(
        10_000, ge=1, le=1_000_000, description="Shadow samples waiting per process; beyond it samples are dropped."
    )
    train_max_episodes: int = Field(1000, ge=1, description="Upper bound on `episodes` in POST /train.")
    train_max_episode_steps: int = Field(1000, ge=1, description="Upper bound on `max_episode_steps`.")
    train_max_hidden_size: int = Field(1024, ge=1, description="Upper bound on `hidden_size`.")
    train_max_batch_size: int = Field(4096, ge=1, description="Upper bound on `batch_size`.")
    train_max_replay_size: int = Field(1_000_000, ge=1, description="Upper bound on `replay_size`.")
    sweep_max_trials: int = Field(256, ge=1, description="Upper bound on a sweep's `trials` in POST /sweeps.")
    embedded_worker: bool = Field(True, description="`python -m app` also starts one trainer worker subprocess.")
    embedded_learner: bool = Field(
        True, description="`python -m app` also starts the learner process (`python -m trainer learner`)."
    )
    embedded_learner_niceness: int = Field(
        0,
        ge=0,
        le=19,
        description="CPU niceness of the embedded learner process. Not idle priority like the job worker: the clients "
        "of a learning model wait for it (`drive(max_lag=...)`), and its work is bounded by their data (the "
        "update-to-data ratio). 19 keeps it out of /act's latency on a busy machine at the cost of its update rate.",
    )
    embedded_sweep_runner: bool = Field(
        True, description="`python -m app` also starts the sweep runner (a local Ray once a sweep arrives)."
    )
    bootstrap_job: bool = Field(True, description="`python -m app` queues a training job when no policy exists yet.")
    bootstrap_preset: str = Field("default", min_length=1, description="Preset of the bootstrap job.")
    bootstrap_episodes: Annotated[int | None, BLANK_IS_UNSET] = Field(
        10,
        ge=1,
        # The default preset evaluates near -150 on Pendulum after about 8 episodes; 10 finish in ~10 s.
        description="Episodes of the bootstrap job (empty: the preset's own), so /act works within ~15 s.",
    )
    max_event_streams: int = Field(
        1000, ge=1, le=1_000_000, description="Open GET /jobs/{id}/events streams per process; beyond it 503."
    )
    event_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often a followed job's new rows are read for its GET /jobs/{id}/events streams (one reader "
        "per job, however many follow it); an event reaches them at most this long after it is written.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, le=1 << 24, description="Largest request head (request line and headers); bigger: 431."
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="A request not fully received this long after it began is dropped (408)."
    )
    limit_concurrency: Annotated[int | None, BLANK_IS_UNSET] = Field(
        None,
        ge=1,
        description="uvicorn's --limit-concurrency per process: requests beyond it get 503 (unset: no limit).",
    )
    access_log: bool = Field(False, description="uvicorn access log (off: it costs /act throughput).")
    bench_endpoints: bool = Field(False, description="Expose POST /bench/noop (benchmarks only).")

    @model_validator(mode="after")
    def _check_policy_file(self) -> Settings:
        if self.policy_file is not None and not self.policy_file.is_file():
            raise ValueError(f"POLICY_FILE {str(self.policy_file)!r} is not a file")
        return self

    @model_validator(mode="after")
    def _check_grpc_port(self) -> Settings:
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise ValueError(f"GRPC_PORT {self.grpc_port} is PORT too: gRPC needs a port of its own")
        return self
