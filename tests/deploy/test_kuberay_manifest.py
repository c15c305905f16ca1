"""deploy/kuberay/raycluster.yaml: every pod gets what its process needs, and the cluster's Ray is the one we pin."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kuberay" / "raycluster.yaml"


def _documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def _containers(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    cluster = docs["RayCluster"]["spec"]
    pods = [cluster["headGroupSpec"]["template"], *(group["template"] for group in cluster["workerGroupSpecs"])]
    pods.append(docs["Deployment"]["spec"]["template"])
    return [container for pod in pods for container in pod["spec"]["containers"]]


def test_every_pod_has_the_database_and_the_clusters_token() -> None:
    for container in _containers(_documents()):
        names = {entry["name"] for entry in container["env"]}
        assert {"DATABASE_URL", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= names, container["name"]


def test_the_cluster_runs_the_ray_the_trainer_image_installs() -> None:
    assert _documents()["RayCluster"]["spec"]["rayVersion"] == version("ray")


def test_the_runner_command_and_its_address_are_the_ones_the_runner_reads() -> None:
    docs = _documents()
    [runner] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    address = next(entry["value"] for entry in runner["env"] if entry["name"] == "RAY_ADDRESS")
    assert address == f"{docs['RayCluster']['metadata']['name']}-head-svc:6379"
    command = runner["command"]
    assert command[:3] == ["python", "-m", "trainer"]
    result = subprocess.run(
        [sys.executable, *command[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "RAY_ADDRESS" in result.stdout, result.stderr
