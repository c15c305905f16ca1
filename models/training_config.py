"""The one training config: every knob of a DDPG run with its bounds and help, the presets, and the job vocabulary.

Torch-free and in the bottom layer on purpose: the CLI flags (`trainer.cli`), the `POST /train` schema and its
OpenAPI (`app.schemas.jobs`), the worker's validation, `config.json` and the `config` metadata of every exported
actor all come from `TrainingConfig`, so a body the API accepts is always one the trainer accepts. Field names
are that shared contract: renaming one is a breaking change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

NoiseKind = Literal["ou", "gaussian"]
ExportChoice = Literal["best", "last"]
PresetName = Literal["default", "seed"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
PromoteRule = Literal["if_better", "always", "never"]

JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})
PROMOTE_RULES: tuple[PromoteRule, ...] = get_args(PromoteRule)

# Static bounds: what any server could run. A server's own budget (TRAIN_MAX_*) narrows them further.
MAX_SEED = 2**31 - 1
MAX_HIDDEN_SIZE = 65536  # the weights loader's cap on a layer's width (models.weights.MAX_DIM)
MAX_STEPS = 100_000_000


class TrainingConfig(BaseModel):
    """Every knob of one DDPG run. The defaults are the tuned `default` preset (see PRESETS).

    Strict: a hyperparameter must be a number of the right kind (`true` or `"20"` is refused, `1` is a float),
    configs arrive as JSON from the API, not only from code.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    env_id: str = Field(
        "Pendulum-v1", min_length=1, max_length=200, description="gymnasium environment id (continuous Box actions)"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for torch, numpy, the environment and the noise")
    episodes: int = Field(30, ge=1, le=1_000_000, description="training episodes to run")
    max_episode_steps: int | None = Field(
        None, ge=1, le=1_000_000, description="steps per episode; none keeps the env's own limit (200 for Pendulum)"
    )
    hidden_size: int = Field(
        64, ge=1, le=MAX_HIDDEN_SIZE, description="width of both hidden layers of actor and critic"
    )
    actor_lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of the actor")
    critic_lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of the critic")
    gamma: float = Field(0.98, ge=0, le=1, description="discount factor of the Bellman target")
    tau: float = Field(0.02, gt=0, le=1, description="polyak factor of the soft target updates")
    batch_size: int = Field(256, ge=1, le=1_000_000, description="transitions per gradient update")
    # After batch_size: its validator reads batch_size, and pydantic validates fields in this order.
    replay_size: int = Field(
        100_000, ge=1, le=MAX_STEPS, description="replay buffer capacity in transitions (at least batch_size)"
    )
    learning_starts: int = Field(
        500, ge=0, le=MAX_STEPS, description="env steps before gradient updates start (a full batch is needed too)"
    )
    noise: NoiseKind = Field("gaussian", description="exploration noise: 'ou' or 'gaussian'")
    noise_sigma: float = Field(0.15, ge=0, le=10, description="noise scale, in the actor's [-1, 1] action units")
    ou_theta: float = Field(0.15, ge=0, le=1, description="Ornstein-Uhlenbeck mean-reversion rate (noise='ou' only)")
    eval_every: int = Field(2, ge=0, le=1_000_000, description="episodes between evaluations (0: only at the end)")
    eval_episodes: int = Field(10, ge=1, le=100, description="episodes per deterministic evaluation")
    export: ExportChoice = Field("best", description="export the best-evaluated actor or the last one")
    random_steps: int = Field(
        500, ge=0, le=MAX_STEPS, description="first env steps taken with uniformly random actions instead of the actor"
    )
    update_every: int = Field(1, ge=1, le=10_000, description="env steps between gradient updates")
    normalize_observations: bool = Field(
        False,
        description="normalize observations by their running mean and variance, as SB3's VecNormalize does "
        "(clip 10, epsilon 1e-8); the statistics are frozen into the exported policy",
    )

    @field_validator("env_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("replay_size")
    @classmethod
    def _holds_a_batch(cls, value: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and value < batch_size:
            raise ValueError(f"must be at least batch_size ({batch_size}), got {value}")
        return value

    def updates_after(self, env_steps: int) -> int:
        """Gradient updates the local loop (trainer.training) has run after `env_steps` environment steps: one every
        `update_every` steps from step max(learning_starts, batch_size) on (a full batch is needed too). The online
        learner owes its consumed transitions the same count, so both learn on the same update-to-data schedule."""
        first = max(self.learning_starts, self.batch_size, 1)
        if env_steps < first:
            return 0
        return env_steps // self.update_every - (first - 1) // self.update_every

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, in field order (config.json, the weights metadata, the job row)."""
        return self.model_dump(mode="json")


# The tutorial, hyperparameter for hyperparameter: OU noise from the first step, an update every step
# once the buffer holds more than one batch (learning_starts = batch + 1), no random warm-up.
SEED_PRESET = TrainingConfig(
    episodes=100,
    max_episode_steps=200,
    hidden_size=256,
    actor_lr=1e-4,
    critic_lr=1e-3,
    gamma=0.99,
    tau=1e-2,
    batch_size=128,
    replay_size=50_000,
    learning_starts=129,
    noise="ou",
    noise_sigma=0.3,
    ou_theta=0.15,
    eval_every=10,
    eval_episodes=10,
    export="last",
    random_steps=0,
    update_every=1,
)

PRESETS: dict[PresetName, TrainingConfig] = {"default": TrainingConfig(), "seed": SEED_PRESET}
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)
FIELD_NAMES: tuple[str, ...] = tuple(TrainingConfig.model_fields)

PresetField = Annotated[
    PresetName, Field(description="starting hyperparameters: `seed` is the tutorial, `default` tuned")
]


def describe_errors(exc: ValidationError) -> str:
    """A config's errors on one line, each at its field: `replay_size: must be at least batch_size (256), got 100`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def make_config(preset: str = "default", **overrides: object) -> TrainingConfig:
    """A preset with some fields replaced, validated as a whole.

    Raises ValueError naming an unknown preset, and pydantic's ValidationError (a ValueError) whose errors are
    located at the offending field otherwise.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    base = PRESETS[preset].model_dump()  # type: ignore[index]  # checked just above
    return TrainingConfig.model_validate({**base, **overrides})


def config_from_job(stored: Mapping[str, Any]) -> TrainingConfig:
    """The config a stored job (or a sweep's base) trains with: its `preset` ("default" when absent) with the rest
    of its fields as overrides. Raises as make_config does (pydantic's errors are located at the field)."""
    overrides = dict(stored)
    preset = overrides.pop("preset", "default")
    return make_config(str(preset), **overrides)


def load_job_config(stored: Mapping[str, Any]) -> TrainingConfig:
    """config_from_job for a worker: ValueError with every problem on one line, as the job's error says it."""
    try:
        return config_from_job(stored)
    except ValidationError as exc:
        raise ValueError(f"invalid config: {describe_errors(exc)}") from None
