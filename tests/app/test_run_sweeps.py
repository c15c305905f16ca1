"""`make run` runs sweeps too: `python -m app` starts the sweep runner, which starts a local Ray for a sweep, bound to
127.0.0.1, shuts it down when idle, starts it again for the next sweep, and stops cleanly on Ctrl-C mid-sweep."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready

pytestmark = pytest.mark.slow

TINY = {"episodes": 2, "max_episode_steps": 50, "eval_episodes": 1, "hidden_size": 16, "batch_size": 32,
        "learning_starts": 32, "random_steps": 32}  # fmt: skip
DEADLINE = 240.0
IDLE_SHUTDOWN_SECONDS = 2


def _processes_with(marker: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of /proc/net/tcp{,6}: hex, each 32-bit word in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def _listening(pids: Iterable[int]) -> dict[str, str]:
    """What the given processes listen on, "address:port" -> a process's name (from /proc, like `ss -ltnp`)."""
    listeners: dict[str, str] = {}  # socket inode -> address:port
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                host, port = fields[1].split(":")
                listeners[fields[9]] = f"{_address(host)}:{int(port, 16)}"
    found = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
                if inode in listeners:
                    found[listeners[inode]] = name
        except OSError:  # the process ended meanwhile
            continue
    return found


def _loopback(listen: str) -> bool:
    address = ipaddress.ip_address(listen.rsplit(":", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _wait_for_sweep(url: str, log_path: Path, *, until: Any) -> dict[str, Any]:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        sweep: dict[str, Any] = httpx.get(url).json()
        if until(sweep):
            return sweep
        time.sleep(0.5)
    raise AssertionError(f"sweep at {url} did not get there: {sweep}\n{log_path.read_text()[-6000:]}")


def _ended(sweep: dict[str, Any]) -> bool:
    return sweep["status"] in ("succeeded", "failed", "cancelled")


def test_the_one_command_run_runs_sweeps_on_a_loopback_ray_that_idles_out_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # HOME of its own: a local Ray keeps its auth token under ~/.ray, which must not outlive the test; and every
    # process started here (the API, the runner, Ray's) is found by it.
    home = tmp_path / "home"
    home.mkdir()
    env = server_env(
        tmp_path, PORT=str(port), EMBEDDED_WORKER="false", EMBEDDED_SWEEP_RUNNER="true", BOOTSTRAP_JOB="false",
        HOME=str(home), RAY_IDLE_SHUTDOWN_SECONDS=str(IDLE_SHUTDOWN_SECONDS),
    )  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    ours = f"HOME={home}".encode()
    log_path = tmp_path / "app.log"
    # Started the usual way: the processes are found by their /proc/<pid>/environ (tests/processes.py).
    with running([sys.executable, "-m", "app"], env, log_path, preloaded=False) as process:
        wait_until_ready(base_url, process, log_path, path="/healthz")
        runner_pid = int(re.findall(r"started embedded sweep runner \(pid (\d+)\)", log_path.read_text())[0])
        body = {
            "base": TINY, "space": {"seed": {"choice": [1, 2]}}, "search": "grid", "trials": 2, "max_concurrent": 1,
            "max_failures": 2,  # a trial's process that a loaded machine starves may be retried, as Tune would
        }  # fmt: skip
        created = httpx.post(f"{base_url}/sweeps", json=body)
        assert created.status_code == 202, created.text
        sweep_url = base_url + created.headers["location"]
        listening: dict[str, str] = {}

        def look(sweep: dict[str, Any]) -> bool:
            # What do our processes listen on? Looked at on every poll until the sweep ends: Ray's processes are up
            # from its start to its idle shutdown, and a tiny trial can start and end between two polls.
            listening.update(_listening(_processes_with(ours)))
            return _ended(sweep)

        sweep = _wait_for_sweep(sweep_url, log_path, until=look)
        errors = [sweep["error"], *(trial["error"] for trial in sweep["trials"])]
        assert sweep["status"] == "succeeded", (errors, log_path.read_text()[-6000:])
        assert [trial["status"] for trial in sweep["trials"]] == ["succeeded", "succeeded"]
        assert [trial["node_ip"] for trial in sweep["trials"]] == ["127.0.0.1", "127.0.0.1"]
        # Ray's GCS, raylet (with its object manager), workers, agents, and the API: all on loopback.
        assert {"gcs_server", "raylet"} <= set(listening.values()), listening
        assert [listen for listen in listening if not _loopback(listen)] == [], listening

        # Idle for IDLE_SHUTDOWN_SECONDS: the runner shuts its local Ray down; only the API and the runner are left.
        end = time.monotonic() + 60
        while set(_processes_with(ours)) - {process.pid, runner_pid} and time.monotonic() < end:
            time.sleep(0.5)
        assert set(_processes_with(ours)) == {process.pid, runner_pid}, log_path.read_text()[-3000:]
        assert "shutting the local Ray down until the next one" in log_path.read_text()

        # The next sweep starts Ray again; Ctrl-C while its trial trains stops everything cleanly.
        long_trial = {**body, "base": {**TINY, "episodes": 500}, "space": {"seed": {"choice": [3]}}, "trials": 1}
        created = httpx.post(f"{base_url}/sweeps", json=long_trial)
        assert created.status_code == 202, created.text
        _wait_for_sweep(
            base_url + created.headers["location"],
            log_path,
            until=lambda sweep: _ended(sweep) or any(t["episodes_done"] >= 1 for t in sweep["trials"]),
        )
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(60) == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "ERROR" not in log and "SIGTERM received" not in log and "PC: @" not in log, log[-6000:]
    assert log.count("embedded sweep runner stopped (exit code 0)") == 1, log[-3000:]
    # The runner shut its local Ray down with it: nothing started under this HOME is left.
    deadline = time.monotonic() + 30
    while _processes_with(ours) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with(ours) == []
