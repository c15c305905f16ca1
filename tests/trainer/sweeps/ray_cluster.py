"""A real Ray cluster on this machine for tests: a head and worker nodes, each `ray start --block` with one CPU.

Every process of the cluster carries the cluster's own auth token in its environment, which is how `stop` finds
each one it started (and only those: another test's cluster, or anyone else's Ray, is never touched).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import PRELOADED_ENV, SWITCH_ENV
from tests.trainer.sweeps import preloaded_ray
from trainer.sweeps.ray_connection import NO_PRESTART

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[3]
# `ray start` as its console script runs it, with the interpreter path that the node starts its Python processes with
# (a raylet's workers among them) given first: the preloaded Python's stand-in script.
RAY_START_WITH_PYTHON = (
    "import sys; from ray.scripts.scripts import main; sys.executable = sys.argv.pop(1); sys.argv[0] = 'ray'; "
    "sys.exit(main())"
)
START_DEADLINE = 60.0
STARTED = b"Ray runtime started."
# The sweep runner's local Ray's system config, as `ray start` takes it (RAY_<key> variables): no idle worker process
# started for the first driver; trials run in Tune's actors, which start their own.
NO_PRESTART_ENV = {f"RAY_{key}": str(value).lower() for key, value in NO_PRESTART.items()}
LIST_DEADLINE = 60.0
# The node lister's answers are the lines that start with this (Ray may print lines of its own).
ANSWER = b"nodes: "
NODE_LISTER = f"""
import json, logging, sys, ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
for _ in sys.stdin:
    nodes = [{{"NodeID": n["NodeID"], "NodeManagerPort": n["NodeManagerPort"]}} for n in ray.nodes() if n["Alive"]]
    print({ANSWER.decode()!r} + json.dumps(nodes), flush=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeLister:
    """One driver process that lists the cluster's live nodes each time it is asked (a line in, a line out): a new
    driver per question cost about 0.6 CPU s apiece (a Python importing Ray and connecting)."""

    def __init__(self, address: str, env: dict[str, str], log: Path) -> None:
        with log.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", NODE_LISTER, address], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err,
            )  # fmt: skip
        self._answers: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(ANSWER):
                self._answers.put(line[len(ANSWER) :])
        self._answers.put(b"")  # the process ended

    def ask(self, timeout: float) -> list[dict[str, object]]:
        """The live nodes; RuntimeError if the lister ended, queue.Empty if it did not answer in time."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"?\n")
        self.process.stdin.flush()
        answer = self._answers.get(timeout=timeout)
        if not answer:
            raise RuntimeError(f"the node lister exited with code {self.process.wait()}")
        nodes: list[dict[str, object]] = json.loads(answer)
        return nodes

    def close(self) -> None:
        """Disconnect (its input closed, it leaves its loop) or, failing that, kill it."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class RayNode:
    process: subprocess.Popen[bytes]
    node_manager_port: int
    log: Path


class RayCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = secrets.token_hex(32)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A short temp dir: Ray's Unix socket paths under it must stay within the OS limit.
        self.temp_dir = Path("/tmp") / f"rt{secrets.token_hex(4)}"
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []
        self._lister: NodeLister | None = None
        self._preloaded: subprocess.Popen[bytes] | None = None
        self._python: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment of every cluster process and every client: a token of its own, never ~/.ray's; and Ray's
        usage statistics off for the drivers too, as `--disable-usage-stats` has them for the nodes."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1"}  # fmt: skip

    def start_head(self) -> RayNode:
        # No autoscaler monitor: the nodes are fixed (it is a Python process polling for the cluster's whole life).
        self.head = self._start(
            "head", ["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                     f"--ray-client-server-port={free_port()}", "--no-monitor"],
        )  # fmt: skip
        return self.head

    def add_worker(self) -> RayNode:
        node = self._start(f"worker-{len(self.workers)}", [f"--address={self.address}"])
        self.workers.append(node)
        return node

    def _ray_start(self) -> list[str]:
        """The `ray start` command: its nodes' workers forked from the preloaded Python (started at the first node),
        unless PREFORK=0 asks for every process to start the usual way."""
        if os.environ.get(SWITCH_ENV) == "0":
            return [RAY, "start"]
        if self._python is None:
            self._python = str(self._start_preloaded_python())
        return [sys.executable, "-c", RAY_START_WITH_PYTHON, self._python, "start"]

    def forked_workers(self) -> list[str] | None:
        """The worker processes forked from the preloaded Python so far (None when the nodes start theirs the usual
        way)."""
        if self._python is None:
            return None
        return [line for line in preloaded_ray.forked(Path(self._python).parent) if "worker" in line]

    def _start_preloaded_python(self) -> Path:
        directory = self.root / "preloaded-python"
        directory.mkdir()
        # Under the short temp dir (a Unix socket's path must stay within the OS limit), which `stop` removes.
        self.temp_dir.mkdir(exist_ok=True)
        socket_path = self.temp_dir / "preloaded-python.sock"
        with (self.root / "preloaded-python.log").open("wb") as err:
            self._preloaded = subprocess.Popen(
                [sys.executable, "-m", "tests.trainer.sweeps.preloaded_ray", str(socket_path), str(directory)],
                env={**self.env, **NO_PRESTART_ENV, **PRELOADED_ENV}, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        assert self._preloaded.stdout is not None
        if self._preloaded.stdout.readline() != b"ready\n":
            log = (self.root / "preloaded-python.log").read_text(errors="replace")
            raise RuntimeError(f"the preloaded Python did not start:\n{log}")
        return preloaded_ray.write_shim(directory, socket_path)

    def _start(self, name: str, args: list[str]) -> RayNode:
        node_manager_port = free_port()
        log = self.root / f"ray-{name}.log"
        command = self._ray_start()
        with log.open("wb") as out:
            # No log monitor (a Python process per node, polling the logs for the node's whole life): every driver
            # here connects with log_to_driver=False, so nothing reads what it would forward.
            process = subprocess.Popen(
                [*command, *args, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
                 "--include-log-monitor=false",
                 f"--node-manager-port={node_manager_port}", f"--object-manager-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", "--block"],
                env={**self.env, **NO_PRESTART_ENV}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        node = RayNode(process, node_manager_port, log)
        deadline = time.monotonic() + START_DEADLINE

        def failed() -> RuntimeError | None:
            if process.poll() is not None or time.monotonic() > deadline:
                return RuntimeError(f"ray node {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            return None

        # `ray start` says when its node is up: read its output (cheap) rather than start a driver process each
        # time (about a second of CPU apiece), then confirm once with a driver that the cluster lists the node.
        while STARTED not in log.read_bytes():
            if error := failed():
                raise error
            time.sleep(0.1)
        while node_manager_port not in {n["NodeManagerPort"] for n in self.alive_nodes(quiet=True)}:
            if error := failed():
                raise error
            time.sleep(0.25)
        return node

    def alive_nodes(self, *, quiet: bool = False) -> list[dict[str, object]]:
        """The cluster's live nodes (id, node manager port), asked from a separate driver process (the node lister,
        started at the first question and again after it failed)."""
        log = self.root / "node-lister.log"
        try:
            if self._lister is None:
                self._lister = NodeLister(self.address, self.env, log)
            return self._lister.ask(LIST_DEADLINE)
        except (OSError, RuntimeError, ValueError, queue.Empty) as exc:
            self._close_lister()
            if quiet:
                return []
            output = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"cannot list the ray nodes ({exc!r}): {output}") from exc

    def _close_lister(self) -> None:
        if self._lister is not None:
            self._lister.close()
            self._lister = None

    def node_id(self, node: RayNode) -> str:
        return next(str(n["NodeID"]) for n in self.alive_nodes() if n["NodeManagerPort"] == node.node_manager_port)

    def kill_node(self, node: RayNode) -> None:
        """Kill the node as a machine that dies would: every process of it at the same instant (frozen first, then
        SIGKILLed), no goodbye to the cluster. Killing only its raylet left the node's workers running on until
        they noticed, and a short trial could finish and record its success in that time. Its `ray start --block`
        then exits. The node lister goes first: it may be connected through that node."""
        self._close_lister()
        raylets = [
            pid
            for pid in self._pids()
            if "raylet" in _cmdline(pid) and f"--node_manager_port={node.node_manager_port}" in _cmdline(pid)
        ]
        doomed = [*raylets, *(pid for raylet in raylets for pid in _descendants(raylet))]
        if self._python is not None:  # the node's workers are the preloaded Python's children
            doomed += preloaded_ray.workers_of(Path(self._python).parent, set(doomed))
        for signal_number in (signal.SIGSTOP, signal.SIGKILL):
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
        try:
            node.process.wait(60)
        except subprocess.TimeoutExpired:
            node.process.terminate()
            node.process.wait(30)

    def live_workers(self) -> list[RayNode]:
        return [node for node in self.workers if node.process.poll() is None]

    def stop(self) -> None:
        """Stop every node (SIGTERM lets `ray start --block` take its processes down), then SIGKILL whatever of
        this cluster is left, found by its token."""
        self._close_lister()
        for node in [*self.workers, *([self.head] if self.head else [])]:
            if node.process.poll() is None:
                node.process.terminate()
        for node in [*self.workers, *([self.head] if self.head else [])]:
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._preloaded is not None:
            self._preloaded.kill()
            self._preloaded.wait()
        subprocess.run(["rm", "-rf", str(self.temp_dir)], check=False)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.root.glob("*.log"))
        )

    def _pids(self) -> list[int]:
        """Processes of this cluster (and of its clients): those with its token in their environment."""
        marker = f"RAY_AUTH_TOKEN={self.token}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (its children, theirs...), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The field after the parenthesised command name is the state, then the parent's pid.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
