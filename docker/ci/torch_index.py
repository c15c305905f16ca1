"""Serve the torch wheel that pip finds on this machine as a local package index (PEP 503), for image builds.

Where the CPU wheel index (download.pytorch.org) is out of reach, the Dockerfile's TORCH_INDEX_URL can point
here instead: the wheel comes from `pip download` with this machine's pip configuration, so it is the build
pip already installs locally (a `+cpu` one on the CI machines).

    python docker/ci/torch_index.py --root /tmp/torch-index            # serves until SIGTERM or Ctrl-C
    docker build --network host --build-arg TORCH_INDEX_URL=http://127.0.0.1:PORT/simple ...

The first line on stdout is `TORCH_INDEX_URL=<url>` once the index answers (`--port 0` picks a free port).
tests/stack runs the same functions in its own process (download_wheel, write_simple_index, make_server).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import logging
import re
import signal
import subprocess
import sys
import tomllib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

logger = logging.getLogger("torch_index")

ROOT = Path(__file__).resolve().parents[2]
_TORCH_REQUIREMENT = re.compile(r"^torch(?![\w.-])")


def torch_requirement(pyproject: Path) -> str:
    """The `torch` requirement of the trainer extra, e.g. `torch>=2.3,<2.14`: the images install that range."""
    project = tomllib.loads(pyproject.read_text())["project"]
    for requirement in project.get("optional-dependencies", {}).get("trainer", []):
        if _TORCH_REQUIREMENT.match(requirement):
            return str(requirement)
    raise SystemExit(f"{pyproject}: no torch requirement in the trainer extra")


def download_wheel(requirement: str, files: Path) -> Path:
    """`pip download` the one wheel (no dependencies: the build gets those from PyPI) into `files`."""
    files.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(files)]
    logger.info("pip download %s", requirement)
    subprocess.run([*command, requirement], check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(files.glob("torch-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one torch wheel in {files}, found {[w.name for w in wheels]}")
    if "+cpu" not in wheels[0].name:
        logger.warning("%s is not a +cpu build: the image will carry whatever it is", wheels[0].name)
    return wheels[0]


def write_simple_index(root: Path, wheel: Path) -> None:
    """`root/simple/` (the project list) and `root/simple/torch/` (the wheel, with its sha256), per PEP 503."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    project = root / "simple" / "torch"
    project.mkdir(parents=True, exist_ok=True)
    href = f"../../files/{quote(wheel.name)}#sha256={digest}"
    (project / "index.html").write_text(
        f'<!DOCTYPE html>\n<html><body>\n<a href="{href}">{html.escape(wheel.name)}</a>\n</body></html>\n'
    )
    (root / "simple" / "index.html").write_text(
        '<!DOCTYPE html>\n<html><body>\n<a href="torch/">torch</a>\n</body></html>\n'
    )
    logger.info("index of %s (sha256 %s) in %s", wheel.name, digest[:12], root)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files, with the access log through logging instead of stderr lines."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def make_server(root: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server of `root` (not yet serving: call serve_forever, in a thread if need be)."""
    return ThreadingHTTPServer((host, port), partial(_QuietHandler, directory=str(root)))


def index_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/simple"


def serve(root: Path, host: str, port: int) -> None:
    server = make_server(root, host, port)
    url = index_url(server)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write(f"TORCH_INDEX_URL={url}\n")
    sys.stdout.flush()
    logger.info("serving %s", url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="directory for the wheel and the index")
    parser.add_argument("--requirement", help="what to download (default: the trainer extra's torch requirement)")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    wheel = download_wheel(args.requirement or torch_requirement(args.pyproject), args.root / "files")
    write_simple_index(args.root, wheel)
    serve(args.root, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
