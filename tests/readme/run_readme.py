"""Run the README's tour as written against a fresh `make run`, and fail when a block breaks (`make test-readme`).

    .venv/bin/python -m tests.readme.run_readme [--port 8000] [--keep] [FILE ...]

Starts the service as `make run` does (`.venv/bin/python -m app`, an empty DATA_DIR in a temporary directory), then
runs every ```bash block with `bash -euo pipefail` and every ```python block with the venv's python, in order, from
the repository's root, each with a timeout (longer for a `# slow:` block); skips a block whose first line starts
`# needs ` (Docker). A block fails when it exits non-zero, times out, or prints an answer whose shape matches none
of those it shows (tests/readme/blocks.py). The first failure stops the run with the block, its output and the end
of the service's log. The service, its children and the local Ray a sweep starts are stopped at the end.

The blocks say `localhost:8000`; by default the service listens on a free port and the runner rewrites that address
in every block, so a `make run` already on 8000 does not get in the way. `--port 8000` runs them byte for byte
(and stops at once if the port is taken).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.readme.blocks import Block, extract_file, unexpected_records
from tests.readme.service import REPO, VENV_PYTHON, Service, free_port, port_is_free, running_service

logger = logging.getLogger("readme")

DOCUMENTS = ("README.md", "docs/TOUR.md", "docs/API.md")
README_PORT = 8000
TOOLS = ("bash", "curl", "jq")


@dataclass
class Outcome:
    block: Block
    seconds: float
    error: str = ""


def rewrite_port(code: str, port: int) -> str:
    """The block with the README's address pointing at `port` instead (unchanged for 8000)."""
    for host in ("localhost", "127.0.0.1"):
        code = code.replace(f"{host}:{README_PORT}", f"{host}:{port}")
    return code


def run_block(block: Block, port: int, work: Path, timeout: float, env: dict[str, str]) -> Outcome:
    """Run one block in a process group of its own; the outcome says why it failed, if it did."""
    suffix = ".sh" if block.lang == "bash" else ".py"
    script = work / f"block-{block.source.replace('/', '_')}-{block.line}{suffix}"
    script.write_text(rewrite_port(block.code, port))
    command = ["bash", "-euo", "pipefail", str(script)] if block.lang == "bash" else [str(VENV_PYTHON), str(script)]
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return Outcome(block, time.monotonic() - started, f"timed out after {timeout:.0f} s" + _output(stdout, stderr))
    seconds = time.monotonic() - started
    logger.info("%s: exit %d in %.1f s%s", block.label, process.returncode, seconds, _output(stdout, ""))
    if process.returncode != 0:
        return Outcome(block, seconds, f"exited with {process.returncode}" + _output(stdout, stderr))
    unexpected = unexpected_records(block, stdout)
    if unexpected:
        shown = "\n".join(f"  {answer}" for answer in block.answers)
        printed = "\n".join(f"  {record}" for record in unexpected)
        return Outcome(block, seconds, f"printed answers shaped like none it shows:\n{printed}\nit shows:\n{shown}")
    return Outcome(block, seconds)


def _output(stdout: str, stderr: str) -> str:
    parts = [f"\n--- {name} ---\n{text.rstrip()}" for name, text in (("stdout", stdout), ("stderr", stderr)) if text]
    return "".join(parts)


def run_all(blocks: list[Block], service: Service, work: Path, args: argparse.Namespace) -> list[Outcome]:
    """Every block that is not skipped, in order, until one fails."""
    # The blocks' temporary files (`mktemp -d`) go where the run's own do, and are removed with them.
    tmp = work / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    outcomes: list[Outcome] = []
    for block in blocks:
        if block.skip:
            logger.info("%s: skipped (%s)", block.label, block.skip)
            continue
        logger.info("%s: running", block.label)
        timeout = args.slow_timeout if block.slow else args.timeout
        outcome = run_block(block, service.port, work, timeout, env)
        if not outcome.error and service.process.poll() is not None:
            outcome.error = f"the service exited with {service.process.returncode} during the block"
        outcomes.append(outcome)
        if outcome.error:
            break
    return outcomes


def report(outcomes: list[Outcome], skipped: list[Block], total: float, service_log: str) -> int:
    """The summary; the exit status (0 when every block ran and passed)."""
    for outcome in outcomes:
        logger.info("%-32s %-6s %6.1f s", outcome.block.label, "FAILED" if outcome.error else "ok", outcome.seconds)
    for block in skipped:
        logger.info("%-32s skipped (%s)", block.label, block.skip)
    failed = [outcome for outcome in outcomes if outcome.error]
    if failed:
        outcome = failed[0]
        logger.error("%s failed: %s\n--- the block ---\n%s--- the service's log (end) ---\n%s",
                     outcome.block.label, outcome.error, outcome.block.code, service_log)  # fmt: skip
        return 1
    logger.info("all %d blocks passed in %.0f s (service start and stop included)", len(outcomes), total)
    return 0


def _warn_about_errors(log_path: Path) -> None:
    """The tour passing is what counts here; errors the service logged are said, not failed on."""
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith(("Traceback", "*** SIGTERM"))]
    if errors:
        logger.warning("the service logged %d error lines, the first: %s", len(errors), errors[0])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.readme.run_readme", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", default=list(DOCUMENTS), help=f"documents, in order (default: {DOCUMENTS})")
    parser.add_argument("--port", type=int, default=0, help="the service's port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per block (default: 240)")
    parser.add_argument("--slow-timeout", type=float, default=600.0, help="seconds per `# slow:` block (600)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (data, logs, blocks)")
    return parser.parse_args(argv)


def preflight(port: int) -> str:
    """Why the run cannot start (a missing tool, no venv, a taken port), or ''."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the README's blocks need {', '.join(missing)} on PATH (Debian: apt-get install {' '.join(missing)})"
    if not VENV_PYTHON.exists():
        return f"{VENV_PYTHON} is missing: `make run` (or `make venv`) creates it"
    if not port_is_free(port):
        return f"port {port} is taken (a `make run` already up?); stop it or pick another --port"
    return ""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    port = args.port or free_port()
    problem = preflight(port)
    if problem:
        logger.error("%s", problem)
        return 2
    blocks = [block for name in args.files for block in extract_file(REPO / name, REPO)]
    work = Path(tempfile.mkdtemp(prefix="readme-run-"))
    started = time.monotonic()
    logger.info("%d blocks from %s; service on port %d; run directory %s", len(blocks), ", ".join(args.files),
                port, work)  # fmt: skip
    try:
        with running_service(work, port) as service:
            outcomes = run_all(blocks, service, work, args)
        service_log = service.log_tail()
        _warn_about_errors(service.log_path)
        return report(outcomes, [block for block in blocks if block.skip], time.monotonic() - started, service_log)
    except RuntimeError as error:  # the service did not come up
        logger.error("%s", error)
        return 1
    finally:
        if args.keep:
            logger.info("run directory kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
