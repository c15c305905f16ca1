"""`python -m trainer {train,evaluate,export-onnx,import,worker}`: the command line over training, actor files,
imports of policies trained elsewhere, and the worker.

Every TrainingConfig field is a `--dashed-name` flag of `train`, generated from the one config model (its
type, choices and description), so the CLI, the HTTP API and the config can never drift apart.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from models.run_files import ACTOR_FILE, EVALUATIONS_FILE, GIF_FILE, REWARDS_FILE
from models.training_config import (
    PRESET_NAMES,
    PRESETS,
    PROMOTE_RULES,
    TrainingConfig,
    describe_errors,
    make_config,
)

if TYPE_CHECKING:
    from trainer.tracking import TrackerGroup

logger = logging.getLogger("trainer")

OWN_FLAGS_COMMANDS = {"worker": "trainer.worker", "sweeps": "trainer.sweeps.cli", "learner": "trainer.online.process"}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # The worker and the sweep runner own their flags: hand them the rest of the line untouched, and import them
    # only now so this CLI works (and stays light) without them (the runner needs Ray).
    if args_list and args_list[0] in OWN_FLAGS_COMMANDS:
        command = importlib.import_module(OWN_FLAGS_COMMANDS[args_list[0]])
        return int(command.main(args_list[1:]))
    parser = build_parser()
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.handler
    # Errors found after parsing are reported by the subcommand's parser, with its usage line.
    return handler(args, args.subparser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="DDPG trainer for continuous control.")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate,export-onnx,import,worker,sweeps,learner}"
    )

    train_parser = sub.add_parser("train", help="train an actor and write it with its reward history to --out")
    train_parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    train_parser.add_argument("--preset", default="default", choices=PRESET_NAMES, help="starting hyperparameters")
    train_parser.add_argument(
        "--gif", action="store_true", help=f"also write {GIF_FILE}: one episode of the exported actor, rendered"
    )
    train_parser.add_argument(
        "--tensorboard",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write TensorBoard scalars (episode return, average of 10, evaluations) under DIR/<out name>; "
        "MLflow tracking is on when MLFLOW_TRACKING_URI is set",
    )
    for name, info in TrainingConfig.model_fields.items():
        _add_field_flag(train_parser, name, info)
    train_parser.set_defaults(handler=_run_train, subparser=train_parser)

    eval_parser = sub.add_parser("evaluate", help="evaluate an exported actor with the torch-free numpy actor")
    eval_parser.add_argument("path", type=Path, help="a policy .safetensors file (ddpg-actor/1 or policy-mlp/1)")
    eval_parser.add_argument("--episodes", type=_positive_int, default=10, help="episodes to run (default 10)")
    eval_parser.add_argument(
        "--max-episode-steps", type=_optional_positive_int, default=None, help="steps per episode (default: env's)"
    )
    eval_parser.set_defaults(handler=_run_evaluate, subparser=eval_parser)

    onnx_parser = sub.add_parser(
        "export-onnx", help="write the ONNX model of an actor file (scaling and clipping inside)"
    )
    onnx_parser.add_argument("path", type=Path, help="a policy .safetensors file (ddpg-actor/1 or policy-mlp/1)")
    onnx_parser.add_argument("out", type=Path, help="the .onnx file to write")
    onnx_parser.set_defaults(handler=_run_export_onnx, subparser=onnx_parser)

    import_parser = sub.add_parser(
        "import",
        help="import a policy trained elsewhere (SB3 zip, CleanRL actor, ONNX MLP) into a model of the database",
    )
    import_parser.add_argument("path", type=Path, help="the file: an SB3 .zip, a CleanRL state dict, an .onnx")
    import_parser.add_argument("--model", required=True, help="the model it becomes a version of (must exist)")
    import_parser.add_argument(
        "--obs-normalization",
        type=Path,
        default=None,
        metavar="JSON_FILE",
        help='VecNormalize\'s statistics: a JSON file {"mean": [...], "var": [...], "clip": 10.0, "epsilon": 1e-8}',
    )
    import_parser.add_argument(
        "--promote", default="if_better", choices=PROMOTE_RULES, help="when it becomes the champion"
    )
    import_parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: $DATABASE_URL, else sqlite under $DATA_DIR)"
    )
    import_parser.set_defaults(handler=_run_import, subparser=import_parser)
    sub.add_parser("worker", help="run training jobs from the database (see `python -m trainer worker --help`)")
    sub.add_parser("sweeps", help="run hyperparameter sweeps on Ray Tune (see `python -m trainer sweeps --help`)")
    sub.add_parser("learner", help="run online learners from recorded experience (`python -m trainer learner --help`)")
    return parser


def _add_field_flag(parser: argparse.ArgumentParser, name: str, info: FieldInfo) -> None:
    """One flag per config field; argparse only converts the text, the config model validates the value."""
    flag = "--" + name.replace("_", "-")
    hint = info.annotation
    default = getattr(PRESETS["default"], name)
    help_text = f"{info.description} (default preset: {default})"
    # SUPPRESS: an absent flag leaves the preset's value, so `--preset seed` is never silently overridden.
    common: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if hint is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    elif typing.get_origin(hint) is Literal:
        parser.add_argument(flag, choices=list(typing.get_args(hint)), **common)
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):
        parser.add_argument(flag, type=_optional_positive_int, metavar="N|none", **common)
    elif hint is int:
        parser.add_argument(flag, type=int, metavar="N", **common)
    elif hint is float:
        parser.add_argument(flag, type=float, metavar="X", **common)
    else:
        parser.add_argument(flag, type=str, **common)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _optional_positive_int(text: str) -> int | None:
    return None if text.lower() in ("none", "null") else _positive_int(text)


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    overrides = {name: getattr(args, name) for name in TrainingConfig.model_fields if name in args}
    try:
        config = make_config(args.preset, **overrides)
    except ValidationError as exc:
        parser.error(describe_errors(exc))
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"cannot create --out directory {out}: {exc}")

    trackers = _trackers(args.tensorboard, out, parser)

    # Imported here: torch and gymnasium load in seconds, and `--help` or a bad flag should not wait.
    from trainer.history import write_episodes_csv, write_evaluations_csv
    from trainer.progress import make_progress
    from trainer.records import EpisodeRecord, EvaluationRecord
    from trainer.tracking import RunArtifacts
    from trainer.training import train

    logger.info("training %s preset=%s seed=%d episodes=%d", config.env_id, args.preset, config.seed, config.episodes)
    trackers.start(config.to_dict())
    stop = _StopOnInterrupt()
    with make_progress(config.episodes, interactive=_stderr_is_terminal()) as progress:

        def callback(episode: EpisodeRecord, evaluation: EvaluationRecord | None) -> bool:
            progress(episode, evaluation)
            trackers.log_progress(episode, evaluation)
            return not stop.requested

        with stop:
            try:
                result = train(config, callback)
            except ValueError as exc:  # e.g. an env id that does not exist or has no Box action space
                logger.error("%s", exc)
                trackers.close("failed")
                return 1

    # The actor, its ONNX model, the plot and config.json: the same files a tracker uploads.
    title = f"DDPG on {config.env_id} (preset {args.preset}, seed {config.seed})"
    artifacts = RunArtifacts.from_training(
        result.actor_bytes, config.to_dict(), result.episodes, result.evaluations, title=title
    )
    artifacts.write_to(out)
    write_episodes_csv(out / REWARDS_FILE, result.episodes)
    write_evaluations_csv(out / EVALUATIONS_FILE, result.evaluations)
    trackers.finish(artifacts)
    trackers.close("cancelled" if result.stopped_early else "finished")
    if args.gif:
        # The same renderer as the API's GET /policies/{id}/rollout.gif, seeded with the run's seed.
        from models.episode_gif import RenderUnavailableError, write_episode_gif

        try:
            write_episode_gif(out / ACTOR_FILE, out / GIF_FILE, seed=config.seed)
        except RenderUnavailableError as exc:
            logger.error("cannot write %s: %s", GIF_FILE, exc)
            return 1
    logger.info(
        "wrote %s: exported %s actor, evaluation mean return %.1f%s",
        out,
        config.export,
        result.eval_mean_return if result.eval_mean_return is not None else float("nan"),
        " (stopped early)" if result.stopped_early else "",
    )
    return 0


def _trackers(tensorboard_root: Path | None, out: Path, parser: argparse.ArgumentParser) -> TrackerGroup:
    """TensorBoard under `--tensorboard DIR/<out name>`, MLflow when MLFLOW_TRACKING_URI is set; either may be off."""
    from trainer.tracking import TrackerGroup
    from trainer.tracking.mlflow_tracker import MlflowTracker
    from trainer.tracking.tensorboard_tracker import TensorBoardTracker

    trackers = TrackerGroup()
    if tensorboard_root is not None:
        try:
            trackers.trackers.append(TensorBoardTracker(tensorboard_root / out.resolve().name))
        except (OSError, ImportError) as exc:  # refuse before training, not after
            parser.error(f"--tensorboard {tensorboard_root}: {exc}")
    mlflow = MlflowTracker.from_env(run_name=out.resolve().name)
    if mlflow is not None:
        trackers.trackers.append(mlflow)
    return trackers


def _run_export_onnx(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from models.weights import WeightsFormatError
    from trainer.onnx_command import export_onnx

    try:
        export_onnx(args.path, args.out)
    except WeightsFormatError as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        logger.error("cannot write %s: %s", args.out, exc)
        return 1
    return 0


def _run_import(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from store.settings import ProcessSettings, load_settings
    from trainer.import_command import ImportCommandError, import_policy_file

    database_url = args.database_url or load_settings(ProcessSettings).database_url
    normalization = None
    if args.obs_normalization is not None:
        try:
            normalization = args.obs_normalization.read_text()
        except OSError as exc:
            parser.error(f"--obs-normalization {args.obs_normalization}: {exc.strerror or exc}")
    try:
        row = import_policy_file(
            args.path,
            model=args.model,
            database_url=database_url,
            obs_normalization=normalization,
            promote=args.promote,
        )
    except ImportCommandError as exc:
        logger.error("%s", exc)
        return 1
    report = {"policy_id": row.policy_id, "model": row.model, "origin": row.origin, "champion": row.champion}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


def _run_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from models.policy import NumpyActor
    from models.weights import WeightsFormatError
    from trainer.evaluation import evaluate_policy

    try:
        actor = NumpyActor.from_file(args.path)
    except WeightsFormatError as exc:
        logger.error("%s: %s", args.path, exc)
        return 1
    try:
        stats = evaluate_policy(
            actor.act, actor.weights.env_id, episodes=args.episodes, max_episode_steps=args.max_episode_steps
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 1
    report = {
        "path": str(args.path),
        "env_id": actor.weights.env_id,
        "episodes": args.episodes,
        "mean_return": stats.mean_return,
        "std_return": stats.std_return,
        "returns": list(stats.returns),
    }
    # The result is the command's output, so it goes to stdout as one JSON line; logs go to stderr.
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


def _stderr_is_terminal() -> bool:
    """A TTY with a known size: tqdm draws nothing on a pseudo-terminal that reports 0x0."""
    if not sys.stderr.isatty():
        return False
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


class _StopOnInterrupt:
    """The first Ctrl-C asks training to stop after the current episode (results are still written);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt: stopping after this episode (Ctrl-C again to abort)")
