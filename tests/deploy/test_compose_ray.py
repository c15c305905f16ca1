"""docker-compose.yml's Ray services: a head, workers that scale, and the sweep runner on the head.

What they run is proven elsewhere with the same commands (tests/trainer/sweeps start `ray start --head`, `ray start
--address` and `python -m trainer sweeps` as real processes); here, that the file wires them that way.
"""

from __future__ import annotations

import subprocess
import sys

from tests.deploy.compose import ROOT, load_compose


def test_every_ray_process_has_the_database_and_one_shared_token() -> None:
    services = load_compose({"RAY_AUTH_TOKEN": "t0ken"})["services"]
    for name in ("ray-head", "ray-worker", "sweeper"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg://"), name  # trials write to it
        assert (environment["RAY_AUTH_MODE"], environment["RAY_AUTH_TOKEN"]) == ("token", "t0ken"), name
        assert services[name]["image"] == "ddpg-policy-service-trainer:latest", name  # Ray comes with the trainer


def test_workers_join_the_head_and_scale() -> None:
    services = load_compose()["services"]
    head, worker, sweeper = services["ray-head"], services["ray-worker"], services["sweeper"]
    assert head["command"][:3] == ["ray", "start", "--head"] and "--port=6379" in head["command"]
    assert "--address=ray-head:6379" in worker["command"] and "--block" in worker["command"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale ray-worker=N`
    assert sweeper["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    assert sweeper["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_sweepers_command_is_the_runner() -> None:
    command = load_compose()["services"]["sweeper"]["command"]
    assert command[:4] == ["python", "-m", "trainer", "sweeps"]
    result = subprocess.run(
        [sys.executable, *command[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "--ray-address" in result.stdout, result.stderr
