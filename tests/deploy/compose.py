"""Read docker-compose.yml as compose resolves it, so tests use the file as the single source."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file with ${VAR:-default} resolved against `env` (default: an empty environment).

    Uses `docker-compose config` when the binary is present (exactly what compose would run), else
    the same interpolation done here (YAML merge keys are resolved by PyYAML itself).
    """
    variables = dict(env or {})
    binary = shutil.which("docker-compose")
    if binary is not None:
        base = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME")}
        out = subprocess.run(
            [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
            capture_output=True,
            text=True,
            check=True,
            env={**base, **variables},
            cwd=ROOT,
        ).stdout
        return dict(yaml.safe_load(out))
    text = (ROOT / "docker-compose.yml").read_text()
    resolved = _VARIABLE.sub(lambda m: variables.get(m["name"]) or m["default"] or "", text)
    return dict(yaml.safe_load(resolved))
