"""A Docker engine for the stack tests: the one that already answers, or a private dockerd started and stopped here.

The private engine is Debian's `docker.io` (installed with apt when missing, together with `docker-compose`,
`debootstrap` and `xfsprogs`), run as root with `--storage-driver=vfs` and everything of its own under
STATE_DIR: socket, exec root, pid file, log, and the data root. It changes nothing else on the machine: no
iptables rules, no IP forwarding, no default bridge.

The data root is an XFS file system in a sparse file mounted on a loop device: vfs copies a whole image for
every layer and container, and on XFS those copies are reflinks (seconds instead of minutes), and removing the
data root afterwards is one unmount instead of deleting millions of files (a quarter of an hour on this ext4).
Where a loop mount is not possible the data root is a plain directory.

Everything is stopped and removed when the block ends, and a run that was killed before it could clean up is
cleaned up by the next one (its pid file and mounts are still under STATE_DIR).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("DDPG_DOCKER_STATE", "/var/tmp/ddpg-docker"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Sparse: only what the images and containers use takes disk space (a few GB for the stack tests).
DATA_IMAGE_SIZE = "64G"
START_DEADLINE = 60.0
# How long a run waits for another one on the same machine to finish (one takes 5 to 15 minutes).
LOCK_DEADLINE = 1500.0
STOP_DEADLINE = 60.0

# Command -> the Debian package that provides it.
PACKAGES = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
    "mkfs.xfs": "xfsprogs",
}


def artifact(name: str) -> Path:
    """Where a log worth keeping after the run goes: test-artifacts/<name> (the directory is made on demand)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


@dataclass(frozen=True)
class Engine:
    """How to reach an engine: the client binary, and the environment (DOCKER_HOST) every docker command gets."""

    docker: str
    env: dict[str, str]
    own: bool
    description: str
    pid: int | None = field(default=None)

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker <args>`, output captured; raises with the output when it fails and `check` is set."""
        result = subprocess.run(
            [self.docker, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result


def base_env() -> dict[str, str]:
    """The environment of every command: the caller's PATH, HOME and locale only (no stray DOCKER_*, API_KEY)."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if key in os.environ}


def ensure_tools() -> None:
    """Install the Debian packages of whatever command is missing (docker.io, docker-compose, debootstrap...)."""
    missing = sorted({package for command, package in PACKAGES.items() if shutil.which(command) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing {', '.join(missing)}: install them, or run as root so this test can")
    logger.info("installing %s with apt-get", " ".join(missing))
    env = {**base_env(), "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _answers(docker: str, env: dict[str, str]) -> str | None:
    """The server version of the engine `docker` reaches with `env`, or None if nothing answers."""
    try:
        result = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


@contextlib.contextmanager
def docker_engine() -> Iterator[Engine]:
    """The engine that answers (DOCKER_HOST or the default socket), else a private one for the block's duration."""
    docker = shutil.which("docker")
    if docker is not None:
        env = {**base_env(), **{k: v for k, v in os.environ.items() if k in ("DOCKER_HOST", "DOCKER_CONTEXT")}}
        version = _answers(docker, env)
        if version is not None:
            logger.info("using the Docker engine that answers (server %s)", version)
            yield Engine(docker=docker, env=env, own=False, description=f"existing engine {version}")
            return
    with _machine_lock(STATE_DIR.with_name(STATE_DIR.name + ".lock")):
        ensure_tools()
        with _private_dockerd(STATE_DIR) as engine:
            yield engine


@contextlib.contextmanager
def _machine_lock(path: Path) -> Iterator[None]:
    """One private engine per machine at a time: a second run waits here for the first to finish.

    Without it a second run would take the first one's dockerd for a leftover and stop it. The lock is an
    flock, so a run that dies releases it, and what it left behind is then really a leftover.
    """
    started = time.monotonic()
    with path.open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > LOCK_DEADLINE:
                    raise RuntimeError(f"another run held {path} for {waited:.0f} s") from None
                if int(waited) % 60 == 0:
                    logger.info("another make test-docker runs on this machine (%s); waiting for it", path)
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = Path(line.split()[1].replace("\\040", " "))
        if str(point) == prefix or str(point).startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def _stop_process(pid: int, deadline: float) -> None:
    """SIGTERM `pid` (not a child of this process) and wait for it to exit; SIGKILL after `deadline` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    logger.warning("dockerd %d did not stop within %.0f s: SIGKILL", pid, deadline)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _processes_mentioning(path: Path) -> list[int]:
    """Processes whose command line names `path` (our dockerd's containerd and shims use it), this one aside."""
    needle = str(path)
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and needle in _cmdline(pid)]


def _is_dockerd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        return False


def _clean_state(state: Path) -> None:
    """Stop a dockerd a killed run left behind, unmount its data root and namespaces, remove the state dir."""
    pidfile = state / "dockerd.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if _is_dockerd(pid):
            logger.warning("stopping dockerd %d left by an earlier run", pid)
            _stop_process(pid, STOP_DEADLINE)
    # A dockerd that was SIGKILLed leaves its containerd (and shims) running with paths under the state dir.
    for pid in _processes_mentioning(state):
        logger.warning("stopping process %d left by an earlier run: %s", pid, _cmdline(pid))
        _stop_process(pid, 10)
    for point in _mounts_under(state):
        # dockerd leaves its network namespace bind mount behind; the loop device detaches with its mount.
        subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
    if state.exists():
        shutil.rmtree(state)


def _mount_data_root(state: Path) -> tuple[Path, str]:
    """The data root: an XFS file system (reflink copies) on a loop device, or a plain directory as a fallback."""
    mountpoint = state / "root"
    mountpoint.mkdir(parents=True)
    image = state / "data.xfs"
    try:
        subprocess.run(["truncate", "-s", DATA_IMAGE_SIZE, str(image)], check=True, capture_output=True)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        logger.warning("no XFS loop mount for the data root (%s): using a plain directory (slower)", detail)
        image.unlink(missing_ok=True)
        return mountpoint / "data", "vfs on a plain directory"
    return mountpoint / "data", "vfs on a loop-mounted XFS"


def _client_of(dockerd: Path) -> str:
    """The client from dockerd's package (/usr/bin/docker next to /usr/sbin/dockerd): its API version matches,
    and it still has the built-in BuildKit client (newer clients need the buildx plugin for that)."""
    for candidate in (dockerd.with_name("docker"), dockerd.parent.parent / "bin" / "docker"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("docker")
    if found is None:
        raise RuntimeError(f"no docker client next to {dockerd}")
    return found


@contextlib.contextmanager
def _private_dockerd(state: Path) -> Iterator[Engine]:
    _clean_state(state)
    data_root, storage = _mount_data_root(state)
    socket = state / "docker.sock"
    log_path = state / "dockerd.log"
    dockerd = shutil.which("dockerd")
    assert dockerd is not None, "ensure_tools installs docker.io"
    command = [
        dockerd,
        "--storage-driver=vfs",
        f"--data-root={data_root}",
        f"--exec-root={state / 'exec'}",
        f"--pidfile={state / 'dockerd.pid'}",
        f"--host=unix://{socket}",
        # Leave the machine's firewall, forwarding and interfaces alone: the stack needs no way out, and the
        # published port is forwarded by docker-proxy. No default bridge: builds use the host's network, compose
        # makes its own.
        "--iptables=false",
        "--ip-forward=false",
        "--bridge=none",
    ]
    logger.info("starting %s", " ".join(command))
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine_env = {**base_env(), "DOCKER_HOST": f"unix://{socket}"}
    docker = _client_of(Path(dockerd))
    try:
        stop = time.monotonic() + START_DEADLINE
        version = None
        while version is None:
            if process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > stop:
                raise RuntimeError(f"dockerd did not answer within {START_DEADLINE:.0f} s:\n{log_path.read_text()}")
            time.sleep(0.5)
            version = _answers(docker, engine_env)
        logger.info("dockerd %s answers on %s (%s)", version, socket, storage)
        yield Engine(
            docker=docker,
            env=engine_env,
            own=True,
            description=f"private dockerd {version}, {storage}",
            pid=process.pid,
        )
    finally:
        logger.info("stopping dockerd %d", process.pid)
        process.terminate()
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            logger.warning("dockerd %d did not stop within %.0f s: SIGKILL", process.pid, STOP_DEADLINE)
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            shutil.copyfile(log_path, artifact("dockerd.log"))
        started = time.monotonic()
        _clean_state(state)
        logger.info("removed %s in %.1f s", state, time.monotonic() - started)
