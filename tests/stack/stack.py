"""The compose stack under test: base images, the torch index, the two images, and docker-compose itself.

What the network forces (and only that) is done here: the base images are local stand-ins built from Debian
packages (docker/ci/standins.sh), torch comes from a local index over the wheel pip finds on this machine
(docker/ci/torch_index.py), and builds run with `--network host` so they reach that index. The Dockerfile and
docker-compose.yml are used as they are; the build arguments and POSTGRES_IMAGE name the stand-ins.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import yaml

from tests.stack.engine import Engine, artifact, base_env

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
STANDINS = ROOT / "docker" / "ci" / "standins.sh"
TORCH_INDEX = ROOT / "docker" / "ci" / "torch_index.py"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- base images


@dataclass(frozen=True)
class Standins:
    """The stand-in base images and how they got into the engine (`built`, `loaded` from the cache, `present`)."""

    python_image: str
    postgres_image: str
    how: str
    seconds: float


def prepare_standins(engine: Engine) -> Standins:
    """Run docker/ci/standins.sh against `engine`: builds them with debootstrap, or loads them from its cache."""
    # The script's `docker` is the engine's own client (PATH), so it speaks the engine's API version.
    env = {**engine.env, "PATH": f"{Path(engine.docker).parent}:{engine.env.get('PATH', '')}"}
    started = time.monotonic()
    result = subprocess.run([str(STANDINS)], env=env, capture_output=True, text=True, timeout=1200, check=False)
    seconds = time.monotonic() - started
    for line in result.stderr.splitlines():
        logger.info("%s", line)
    if result.returncode != 0:
        raise RuntimeError(f"{STANDINS.name} exited {result.returncode}:\n{result.stderr[-4000:]}")
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    how = "built" if "building" in result.stderr else "loaded" if "loading" in result.stderr else "present"
    return Standins(values["PYTHON_IMAGE"], values["POSTGRES_IMAGE"], how, seconds)


def _load_torch_index() -> ModuleType:
    """docker/ci/torch_index.py as a module (docker/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ddpg_ci_torch_index", TORCH_INDEX)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def torch_index(root: Path) -> Iterator[str]:
    """docker/ci/torch_index.py's index, served from a thread of this process for the block; yields its URL.

    In this process rather than a child: nothing else can stop it while a build needs it (pip falls back to
    PyPI's CUDA build when the index does not answer, silently apart from its retries).
    """
    module = _load_torch_index()
    pyproject = ROOT / "pyproject.toml"
    wheel = module.download_wheel(module.torch_requirement(pyproject), root / "files")
    module.write_simple_index(root, wheel)
    server = module.make_server(root)
    thread = threading.Thread(target=server.serve_forever, name="torch-index", daemon=True)
    thread.start()
    url = str(module.index_url(server))
    try:
        with httpx.Client(timeout=10) as client:
            client.get(f"{url}/torch/").raise_for_status()
        logger.info("torch index of %s at %s", wheel.name, url)
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# ------------------------------------------------------------------------------------------------ images


@dataclass(frozen=True)
class BuiltImage:
    name: str
    target: str
    seconds: float
    size_bytes: int


def compose_config(variables: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it with `variables` (its `config` command)."""
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"],
        env={**base_env(), **variables},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(yaml.safe_load(result.stdout))


def images_to_build(config: dict[str, Any]) -> list[tuple[str, str, Path]]:
    """(image name, target, context) of every service with a build, each image once, in file order."""
    seen: dict[str, tuple[str, str, Path]] = {}
    for service in config["services"].values():
        build = service.get("build")
        if build is not None and service["image"] not in seen:
            seen[service["image"]] = (service["image"], build["target"], Path(build.get("context", ROOT)))
    return list(seen.values())


def build_image(engine: Engine, name: str, target: str, context: Path, build_args: dict[str, str]) -> BuiltImage:
    """`docker build --target <target> -t <name> <context>`, as the Dockerfile's header says, plus `build_args`.

    `--network host` so the build reaches the local torch index on 127.0.0.1. BuildKit (DOCKER_BUILDKIT=1):
    with vfs the classic builder copies the whole file system for every instruction, ten times slower.
    """
    command = [engine.docker, "build", "--network", "host", "--target", target, "-t", name]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    log_path = artifact(f"build-{target}.log")
    logger.info("building %s (target %s)", name, target)
    started = time.monotonic()
    with log_path.open("w") as log:
        result = subprocess.run(
            [*command, "--progress", "plain", str(context)],
            env={**engine.env, "DOCKER_BUILDKIT": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"building {name} failed ({result.returncode}):\n{log_path.read_text()[-6000:]}")
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())
    logger.info("built %s in %.0f s: %.0f MB", name, seconds, size / 1e6)
    return BuiltImage(name, target, seconds, size)


def image_ids(engine: Engine) -> set[str]:
    return set(engine.run("images", "--all", "--quiet", "--no-trunc").stdout.split())


# ------------------------------------------------------------------------------------------------- stack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """One compose project of docker-compose.yml. The API is reached only on its port published on 127.0.0.1."""

    engine: Engine
    project: str
    variables: dict[str, str]
    port: int
    api_key: str
    env_file: Path

    @classmethod
    def create(cls, engine: Engine, postgres_image: str, work_dir: Path) -> Stack:
        port = free_port()
        api_key = "stack-" + secrets.token_hex(12)
        variables = {
            # Published on loopback only: `127.0.0.1:PORT:8000`.
            "API_PORT": f"127.0.0.1:{port}",
            "POSTGRES_IMAGE": postgres_image,
            "POSTGRES_PASSWORD": secrets.token_hex(12),
            "API_KEY": api_key,
        }
        # An empty env file: a developer's .env (API_KEY, API_PORT...) must not change what is tested.
        env_file = work_dir / "compose.env"
        env_file.write_text("")
        return cls(engine, f"ddpgstack{secrets.token_hex(3)}", variables, port, api_key, env_file)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file)]
        logger.info("docker-compose %s", " ".join(args))
        result = subprocess.run(
            [*command, *args],
            env={**self.engine.env, **self.variables},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}\n"
                f"--- the services' logs\n{self.logs()}"
            )
        return result

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def inspect(self, container: str, template: str) -> str:
        return self.engine.run("inspect", "--format", template, container).stdout.strip()

    def logs(self, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", f"--tail={tail}", check=False, timeout=60)
        return result.stdout + result.stderr

    def sql(self, query: str) -> list[list[str]]:
        """Rows of `query`, run by psql inside the db container (the database port is not published)."""
        out = self.compose(
            "exec", "-T", "db", "psql", "-U", "ddpg", "-d", "ddpg", "-At", "-F", "\t", "-c", query
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def project_resources(self) -> dict[str, list[str]]:
        """Containers, volumes and networks Docker labels with this project: what `down -v` must leave empty."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": self.engine.run("ps", "--all", "--quiet", "--filter", label).stdout.split(),
            "volumes": self.engine.run("volume", "ls", "--quiet", "--filter", label).stdout.split(),
            "networks": self.engine.run("network", "ls", "--quiet", "--filter", label).stdout.split(),
        }

    def remove_everything(self) -> None:
        """`down -v`, then anything left with the project's label (after a failed `down`)."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
        left = self.project_resources()
        if left["containers"]:
            self.engine.run("rm", "--force", "--volumes", *left["containers"], check=False)
        if left["volumes"]:
            self.engine.run("volume", "rm", "--force", *left["volumes"], check=False)
        if left["networks"]:
            self.engine.run("network", "rm", *left["networks"], check=False)

    def wait_for(self, what: str, probe: Callable[[], T | None], deadline: float, interval: float = 0.5) -> T:
        """Poll `probe` until it returns something (a bound on waiting); fail with the services' logs."""
        started = time.monotonic()
        stop = started + deadline
        while True:
            with contextlib.suppress(httpx.TransportError):
                result = probe()
                if result is not None and result is not False:
                    logger.info("%s: after %.1f s", what, time.monotonic() - started)
                    return result
            if time.monotonic() > stop:
                raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}\n{self.logs()}")
            time.sleep(interval)
