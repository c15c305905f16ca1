"""`python -m ddpg_client`: run Pendulum locally with the service's actions, or ask for one action.

    python -m ddpg_client rollout --url http://127.0.0.1:8000 --episodes 5 [--seed 0] [--api-key KEY]
    python -m ddpg_client act --url http://127.0.0.1:8000 1.0 0.0 0.0
    python -m ddpg_client drive --env mypackage.envs:MyEnv --model arm --episodes 100
    python -m ddpg_client experience MODEL --format minari --out DIR   (or --format parquet)

Results go to stdout, one line each; errors are logged to stderr. Exit status: 0 done, 1 the service answered
with an error (or a bad argument), 2 the service could not be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from ddpg_client.clients import PolicyClient
from ddpg_client.control_loop import run_remote_episodes
from ddpg_client.errors import ServiceError
from ddpg_client.experience_download import FORMATS, download, minari_dataset_id
from ddpg_client.protocol import DEFAULT_TIMEOUT_SECONDS

# Named explicitly: under `python -m ddpg_client` the entry module's __name__ is "__main__".
logger = logging.getLogger("ddpg_client")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ddpg_client", description="Talk to the DDPG policy service.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("POLICY_SERVICE_URL", "http://127.0.0.1:8000"))
    common.add_argument(
        "--api-key", default=os.environ.get("POLICY_SERVICE_API_KEY"), help="sent as `Authorization: Bearer`"
    )
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds per request")
    common.add_argument("--policy-id", type=int, default=None, help="a stored policy instead of the default one")
    sub = parser.add_subparsers(dest="command", required=True)

    rollout = sub.add_parser(
        "rollout", parents=[common], help="run episodes locally with every action from POST /act and print returns"
    )
    rollout.add_argument("--episodes", type=int, default=5)
    rollout.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    rollout.add_argument("--env-id", default="Pendulum-v1")
    rollout.add_argument("--max-steps", type=int, default=None, help="default: the environment's time limit")

    drive = sub.add_parser(
        "drive",
        parents=[common],
        help="run an environment here on a model's actions over WS /act/stream, with rewards and episode ends (what "
        "an online learner learns from)",
    )
    drive.add_argument(
        "--env", required=True, help="a gymnasium id (`module:Env-v0` imports module first) or `package.module:Factory`"
    )
    drive.add_argument("--model", required=True, help="the model whose sessions these are")
    drive.add_argument("--episodes", type=int, default=10)
    drive.add_argument("--seed", type=int, default=None, help="episode i is reset with seed + i (default: unseeded)")
    drive.add_argument("--max-steps", type=int, default=None, help="cut episodes at this many steps (truncated)")
    drive.add_argument(
        "--max-lag",
        type=int,
        default=None,
        help="between episodes, wait while the model's learner has more unlearned transitions than this",
    )

    act = sub.add_parser("act", parents=[common], help="print the action for one observation")
    act.add_argument("observation", nargs="+", type=float)

    experience = sub.add_parser(
        "experience", parents=[common], help="download a model's recorded experience as a Minari dataset or Parquet"
    )
    experience.add_argument("model", help="the model's name")
    experience.add_argument("--format", choices=FORMATS, default="minari")
    experience.add_argument("--out", type=Path, required=True, help="directory to write into (created if missing)")
    experience.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cmd_rollout(args: argparse.Namespace, client: PolicyClient) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    returns: list[float] = []
    outcomes = run_remote_episodes(
        client,
        episodes=args.episodes,
        seed=args.seed,
        env_id=args.env_id,
        max_steps=args.max_steps,
        policy_id=args.policy_id,
    )
    try:
        for outcome in outcomes:
            returns.append(outcome.episode_return)
            policies = ",".join(str(p) for p in sorted(outcome.policy_ids))
            _write(
                f"episode {outcome.episode} seed {outcome.seed} return {outcome.episode_return:.2f} "
                f"steps {outcome.steps} policy {policies}"
            )
    except ValueError as exc:  # the environment: an unknown --env-id, a bad --max-steps, mismatched sizes
        logger.error("%s", exc)
        return 1
    _write(f"mean return {sum(returns) / len(returns):.2f} over {len(returns)} episodes")
    return 0


def _cmd_drive(args: argparse.Namespace, client: PolicyClient) -> int:
    try:
        episodes = client.drive(
            args.env,
            model=args.model,
            episodes=args.episodes,
            seed=args.seed,
            max_steps=args.max_steps,
            max_lag=args.max_lag,
        )
    except ValueError as exc:  # the environment: an unknown id, a factory that cannot be imported
        logger.error("%s", exc)
        return 1
    returns = [episode.episode_return for episode in episodes]
    for episode in episodes:
        _write(f"episode {episode.episode} return {episode.episode_return:.2f} steps {episode.steps}")
    _write(f"mean return {sum(returns) / len(returns):.2f} over {len(returns)} episodes")
    return 0


def _cmd_act(args: argparse.Namespace, client: PolicyClient) -> int:
    result = client.act(args.observation, policy_id=args.policy_id)
    _write(json.dumps({"action": result.action, "policy_id": result.policy_id}))
    return 0


def _cmd_experience(args: argparse.Namespace, client: PolicyClient) -> int:
    path = download(client, args.model, args.format, args.out, progress=not args.no_progress)
    if args.format == "minari":
        dataset_id = minari_dataset_id(args.model)
        _write(f"{path}")
        _write(f"MINARI_DATASETS_PATH={args.out} python -c 'import minari; minari.load_dataset(\"{dataset_id}\")'")
    else:
        _write(f"{path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m ddpg_client`; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _build_parser().parse_args(argv)
    try:
        with PolicyClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command == "rollout":
                return _cmd_rollout(args, client)
            if args.command == "drive":
                return _cmd_drive(args, client)
            if args.command == "experience":
                return _cmd_experience(args, client)
            return _cmd_act(args, client)
    except ServiceError as exc:
        logger.error("service error: %s", exc)
        return 1
    except httpx.TransportError as exc:
        logger.error("cannot reach %s: %s", args.url, exc)
        return 2
