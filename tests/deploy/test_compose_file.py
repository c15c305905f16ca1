"""Static checks of docker-compose.yml: it validates, and it wires the services the way docs/DEPLOYMENT.md says."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.compose import ROOT, load_compose


def test_compose_file_validates_with_docker_compose() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (Debian package) is not installed; .ci/run installs it")
    result = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_services_and_their_wiring() -> None:
    services = load_compose()["services"]
    assert set(services) == {"db", "migrate", "api", "trainer", "learner", "ray-head", "ray-worker", "sweeper"}
    # The database keeps its data in a named volume and reports health.
    assert any(volume.startswith("pgdata:") for volume in services["db"]["volumes"])
    assert "healthcheck" in services["db"]
    for name in ("migrate", "api", "trainer"):
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    for name in ("api", "trainer"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The API is published on 8000 and is healthy only when ready (database + policy).
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["environment"]["EMBEDDED_WORKER"] == "false"
    # gRPC inference is on, and published on the host's loopback only.
    assert services["api"]["environment"]["GRPC_PORT"] == "8001"
    assert ("127.0.0.1", 8001) in [_host_and_target(port) for port in services["api"]["ports"]]
    assert services["api"]["environment"]["EMBEDDED_LEARNER"] == "false"
    assert services["api"]["environment"]["EMBEDDED_SWEEP_RUNNER"] == "false"
    assert services["learner"]["command"] == ["python", "-m", "trainer", "learner"]
    # Workers scale with --scale, so none may pin a container name or a host port.
    assert "container_name" not in services["trainer"]
    assert "ports" not in services["trainer"]


def _host_and_target(port: str | dict[str, object]) -> tuple[str, int]:
    """A published port's host address and container port, from the short form (`127.0.0.1:8001:8001`, to which
    `docker-compose config` adds `/tcp`) or the long one (a mapping)."""
    if isinstance(port, dict):
        return str(port.get("host_ip") or "0.0.0.0"), int(str(port["target"]))
    parts = port.split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else "0.0.0.0"), int(parts[-1])
