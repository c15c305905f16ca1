"""The reward history as CSV: one row per episode (rewards.csv) and per evaluation (evaluations.csv)."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from trainer.records import EpisodeRecord, EvaluationRecord

EPISODE_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EpisodeRecord))
EVALUATION_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvaluationRecord))


def write_episodes_csv(path: Path, records: Sequence[EpisodeRecord]) -> None:
    """rewards.csv: episode, episode_return, avg_return_10, env_steps, wall_time."""
    _write(path, EPISODE_COLUMNS, [dataclasses.astuple(r) for r in records])


def write_evaluations_csv(path: Path, records: Sequence[EvaluationRecord]) -> None:
    """evaluations.csv: episode, env_steps, mean_return, std_return, wall_time."""
    _write(path, EVALUATION_COLUMNS, [dataclasses.astuple(r) for r in records])


def _write(path: Path, columns: Sequence[str], rows: Sequence[tuple[object, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
