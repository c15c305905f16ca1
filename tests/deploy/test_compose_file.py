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
    assert services["api"]["environment"]["EMBEDDED_LEARNER"] == "false"
    assert services["learner"]["command"] == ["python", "-m", "trainer", "learner"]
    # Workers scale with --scale, so none may pin a container name or a host port.
    assert "container_name" not in services["trainer"]
    assert "ports" not in services["trainer"]
