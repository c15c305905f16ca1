"""The files a finished run hands to its trackers, as bytes: from the CLI's output directory or from the worker's
training result, so both feed the trackers the same way.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.onnx_export import safetensors_to_onnx

if TYPE_CHECKING:
    from trainer.records import EpisodeRecord, EvaluationRecord

# The names `python -m trainer train --out DIR` writes (trainer/cli.py), plus the ONNX export.
from models.run_files import ACTOR_FILE, CONFIG_FILE, ONNX_FILE, PLOT_FILE

ARTIFACT_FILES = (ACTOR_FILE, ONNX_FILE, PLOT_FILE, CONFIG_FILE)


@dataclass(frozen=True)
class RunArtifacts:
    """File name -> content. Names are plain file names (no directories); a tracker stores them side by side."""

    files: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.files:
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise ValueError(f"artifact names are plain file names, got {name!r}")

    @property
    def actor_bytes(self) -> bytes | None:
        return self.files.get(ACTOR_FILE)

    @classmethod
    def from_directory(cls, directory: Path, names: Iterable[str] = ARTIFACT_FILES) -> RunArtifacts:
        """The named files found in `directory` (a `train --out` directory); absent ones are left out.

        When the directory has the actor but no `actor.onnx`, the ONNX model is built from the actor, so a run
        always carries both. Raises `models.weights.WeightsFormatError` for an actor file the loader rejects.
        """
        wanted = tuple(names)
        files = {name: (directory / name).read_bytes() for name in wanted if (directory / name).is_file()}
        if ACTOR_FILE in files and ONNX_FILE not in files and ONNX_FILE in wanted:
            files[ONNX_FILE] = safetensors_to_onnx(files[ACTOR_FILE])
        return cls(files)

    @classmethod
    def from_training(
        cls,
        actor_bytes: bytes,
        config: Mapping[str, Any],
        episodes: Sequence[EpisodeRecord],
        evaluations: Sequence[EvaluationRecord],
        *,
        title: str = "DDPG learning curve",
    ) -> RunArtifacts:
        """The same four files the CLI writes, made in memory from a `TrainingResult` (the worker's case).

        `config` is `DDPGConfig.to_dict()`. Imports the plotting module (matplotlib, and torch through the
        training records): call it in the trainer process only.
        """
        from trainer.plotting import plot_rewards

        # plot_rewards writes a file; a private temporary directory keeps concurrent jobs apart.
        with tempfile.TemporaryDirectory(prefix="run-artifacts-") as tmp:
            plot_path = Path(tmp) / PLOT_FILE
            plot_rewards(plot_path, episodes, evaluations, title=title)
            plot = plot_path.read_bytes()
        return cls(
            {
                ACTOR_FILE: actor_bytes,
                ONNX_FILE: safetensors_to_onnx(actor_bytes),
                PLOT_FILE: plot,
                # As the CLI writes config.json, so the file is the same wherever the run came from.
                CONFIG_FILE: (json.dumps(dict(config), indent=2) + "\n").encode("utf-8"),
            }
        )

    def write_to(self, directory: Path) -> list[Path]:
        """Write every file into `directory` (which must exist); returns the paths written."""
        paths = []
        for name, content in sorted(self.files.items()):
            path = directory / name
            path.write_bytes(content)
            paths.append(path)
        return paths
