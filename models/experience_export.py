"""Recorded experience as offline-RL datasets: one Parquet file, or a Minari dataset in a tar.gz archive. Torch-free.

Both writers take the recorded transitions as an iterable of decoded chunks (`ExperienceColumns`, in the order the
store holds them) and write to a binary sink, so that a caller can stream chunks from the database or an object
store without ever holding all of them.

Parquet: a row per recorded transition, the chunk columns as they are (models/experience_chunks.py), in recording
order; every transition, including those of episodes that have not ended yet (their last step has neither
`terminated` nor `truncated`). Memory: one decoded chunk at a time.

Minari: the episodes that ended, each one exactly as recorded. Transitions are grouped by (session, episode) and
ordered by `step`; an episode's observations are its `observation` column followed by the last step's
`next_observation` (n + 1 of them), its actions, rewards, terminations and truncations have n rows. An episode is
left out (and counted in the dataset's metadata, `skipped_episodes`) when it has not ended (no terminated or
truncated step yet), when its steps are not 0, 1, ..., n - 1 (a transition lost to a dropped flush or to retention),
or when a step after its end exists. The layout is the one minari's arrow storage reads (minari >= 0.5):

    <dataset_id>/data/metadata.json            dataset metadata: spaces, totals, data_format "arrow"
    <dataset_id>/data/<i>/part-0.arrow         episode i: one Arrow IPC file with one record batch, n + 1 rows
    <dataset_id>/data/<i>/metadata.json        {"id", "total_steps", "session", "episode", "policy_ids"}

Episode i's `infos` carry what the service knows about each action: policy_id, noise, noise_scale, time (row j
describes action j; the last row is padding, as minari pads actions). Unpacking the archive into a Minari datasets
directory (MINARI_DATASETS_PATH or ~/.minari/datasets) makes `minari.load_dataset(dataset_id)` read it.

Memory of the Minari writer: one decoded chunk, plus one episode at a time (its transitions and its Arrow file),
plus a few hundred bytes of bookkeeping per episode seen. The grouping needs every chunk read once before any
episode can be known complete, so transitions are spilled, one fixed-width binary file per episode, under a
working directory that the caller provides (disk: about the uncompressed size of the transitions, deleted as each
episode is written).
"""

from __future__ import annotations

import io
import json
import logging
import math
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.experience_chunks import ExperienceColumns, schema, to_table

logger = logging.getLogger(__name__)

# The dataset format version minari checks (`minari_version` in the metadata): the oldest release that reads the
# arrow storage, which every later release still accepts.
MINARI_FORMAT_VERSION = "0.5.0"
MINARI_DATA_FORMAT = "arrow"
ARCHIVE_MEDIA_TYPE = "application/gzip"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def minari_dataset_id(model_name: str) -> str:
    """The id of a model's recorded dataset: `ddpg-service/<model>/recorded-v0` (minari's namespace/name-vN)."""
    return f"ddpg-service/{model_name}/recorded-v0"


@dataclass(frozen=True, slots=True)
class BoxSpaces:
    """The observation and action Box bounds a dataset declares (None: unbounded). float32, as gymnasium's Box."""

    observation_low: tuple[float | None, ...]
    observation_high: tuple[float | None, ...]
    action_low: tuple[float | None, ...]
    action_high: tuple[float | None, ...]

    @classmethod
    def from_stored(cls, spaces: Mapping[str, Any]) -> BoxSpaces:
        """From a model row's `spaces` (models.env_spaces.EnvSpaces.to_dict: lists of bounds, None for infinite)."""
        return cls(
            observation_low=tuple(spaces["observation_low"]),
            observation_high=tuple(spaces["observation_high"]),
            action_low=tuple(spaces["action_low"]),
            action_high=tuple(spaces["action_high"]),
        )

    @property
    def obs_dim(self) -> int:
        return len(self.observation_low)

    @property
    def act_dim(self) -> int:
        return len(self.action_low)


def _serialized_box(low: Sequence[float | None], high: Sequence[float | None]) -> str:
    """A Box as minari serializes it (minari.serialization): JSON with Infinity for an unbounded side."""
    return json.dumps(
        {
            "type": "Box",
            "dtype": "float32",
            "shape": [len(low)],
            "low": [-math.inf if value is None else float(value) for value in low],
            "high": [math.inf if value is None else float(value) for value in high],
        }
    )


# ---------------------------------------------------------------------------------------------------------- Parquet


def write_parquet(chunks: Iterable[ExperienceColumns], sink: IO[bytes], *, obs_dim: int, act_dim: int) -> int:
    """Every transition of `chunks` as one Parquet file (zstd, a row group per chunk) into `sink`; the row count.

    The schema is the chunk schema, so an export without transitions is still a valid, typed, empty file.
    """
    import pyarrow.parquet as pq  # only a process that exports Parquet pays for the import

    rows = 0
    with pq.ParquetWriter(sink, schema(obs_dim, act_dim), compression="zstd") as writer:
        for columns in chunks:
            if len(columns) == 0:
                continue
            writer.write_table(to_table(columns))
            rows += len(columns)
    return rows


# ----------------------------------------------------------------------------------------------------------- Minari


@dataclass(slots=True)
class MinariSummary:
    """What a Minari export holds, and what it left out and why."""

    dataset_id: str
    episodes: int = 0
    steps: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"not_ended": 0, "missing_steps": 0, "after_end": 0})


@dataclass(slots=True)
class _SpilledEpisode:
    index: int  # the spill file's number, in order of first appearance
    session: str
    episode: int
    rows: int = 0


def _spill_dtype(obs_dim: int, act_dim: int) -> np.dtype[Any]:
    """One transition as a fixed-width record (the session and episode are the file's, not the row's)."""
    return np.dtype(
        [
            ("observation", np.float32, (obs_dim,)),
            ("action", np.float32, (act_dim,)),
            ("reward", np.float32),
            ("next_observation", np.float32, (obs_dim,)),
            ("terminated", np.bool_),
            ("truncated", np.bool_),
            ("policy_id", np.int64),
            ("step", np.int32),
            ("noise", np.float32, (act_dim,)),
            ("noise_scale", np.float32),
            ("time", np.float64),
        ]
    )


class _EpisodeSpill:
    """Appends each episode's transitions to its own file as they come, chunk after chunk."""

    def __init__(self, directory: Path, obs_dim: int, act_dim: int) -> None:
        self.directory = directory
        self.dtype = _spill_dtype(obs_dim, act_dim)
        self.episodes: dict[tuple[str, int], _SpilledEpisode] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, spilled: _SpilledEpisode) -> Path:
        return self.directory / f"{spilled.index}.bin"

    def add(self, columns: ExperienceColumns) -> None:
        n = len(columns)
        if n == 0:
            return
        records = np.empty(n, self.dtype)
        for name in self.dtype.names or ():
            records[name] = getattr(columns, name)
        sessions = columns.session
        # Group the chunk's rows by episode once (stable: rows of one episode keep their chunk order).
        keys = np.array([f"{session}\x00{episode}" for session, episode in zip(sessions, columns.episode, strict=True)])
        order = np.argsort(keys, kind="stable")
        boundaries = np.flatnonzero(keys[order][1:] != keys[order][:-1]) + 1
        for group in np.split(order, boundaries):
            first = int(group[0])
            key = (str(sessions[first]), int(columns.episode[first]))
            spilled = self.episodes.get(key)
            if spilled is None:
                spilled = _SpilledEpisode(index=len(self.episodes), session=key[0], episode=key[1])
                self.episodes[key] = spilled
            with self.path(spilled).open("ab") as file:
                file.write(records[np.sort(group)].tobytes())
            spilled.rows += len(group)

    def read(self, spilled: _SpilledEpisode) -> npt.NDArray[Any]:
        path = self.path(spilled)
        records = np.fromfile(path, dtype=self.dtype)
        path.unlink()
        return records


def _complete_episode(records: npt.NDArray[Any]) -> tuple[npt.NDArray[Any] | None, str | None]:
    """The episode's transitions ordered by step, or None and why it is left out (a MinariSummary.skipped key)."""
    records = records[np.argsort(records["step"], kind="stable")]
    ends = np.flatnonzero(records["terminated"] | records["truncated"])
    if ends.size == 0:
        return None, "not_ended"
    if ends[0] != len(records) - 1:
        return None, "after_end"
    if not np.array_equal(records["step"], np.arange(len(records), dtype=records["step"].dtype)):
        return None, "missing_steps"
    return records, None


def _fixed_list(values: npt.NDArray[np.float32]) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), values.shape[1])


def _episode_arrow(records: npt.NDArray[Any]) -> bytes:
    """One episode as minari's arrow storage writes it: n + 1 rows, actions and step values padded at the end."""

    def padded(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.concatenate([values, np.zeros((1, *values.shape[1:]), values.dtype)])

    observations = np.concatenate([records["observation"], records["next_observation"][-1:]])
    infos = pa.StructArray.from_arrays(
        [
            pa.array(padded(records["policy_id"])),
            _fixed_list(padded(records["noise"])),
            pa.array(padded(records["noise_scale"])),
            pa.array(padded(records["time"])),
        ],
        names=["policy_id", "noise", "noise_scale", "time"],
    )
    batch = pa.RecordBatch.from_pydict(
        {
            "observations": _fixed_list(observations),
            "actions": _fixed_list(padded(records["action"])),
            "rewards": pa.array(padded(records["reward"])),
            "terminations": pa.array(padded(records["terminated"])),
            "truncations": pa.array(padded(records["truncated"])),
            "infos": infos,
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _add_file(archive: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def write_minari_archive(
    chunks: Iterable[ExperienceColumns],
    sink: IO[bytes],
    *,
    dataset_id: str,
    spaces: BoxSpaces,
    work_dir: Path,
    description: str = "",
    env_spec_json: str | None = None,
) -> MinariSummary:
    """The ended episodes of `chunks` as a Minari dataset (arrow storage), a tar.gz streamed into `sink`.

    `work_dir` is an empty directory for the per-episode spill; it is left empty. `env_spec_json` (gymnasium's
    EnvSpec.to_json() of the model's environment, when it has one here) lets `dataset.recover_environment()` make
    the environment. See the module docstring for which episodes are included, the layout, and the memory bound.
    """
    spill = _EpisodeSpill(work_dir / "episodes", spaces.obs_dim, spaces.act_dim)
    for columns in chunks:
        if columns.obs_dim != spaces.obs_dim or columns.act_dim != spaces.act_dim:
            raise ValueError(
                f"recorded transitions have obs_dim {columns.obs_dim} / act_dim {columns.act_dim}, the model's spaces "
                f"{spaces.obs_dim} / {spaces.act_dim}"
            )
        spill.add(columns)

    summary = MinariSummary(dataset_id=dataset_id)
    now = time.time()
    data_dir = f"{dataset_id}/data"
    with tarfile.open(fileobj=sink, mode="w|gz") as archive:
        for spilled in spill.episodes.values():
            records, reason = _complete_episode(spill.read(spilled))
            if records is None:
                assert reason is not None
                summary.skipped[reason] += 1
                continue
            index = summary.episodes
            _add_file(archive, f"{data_dir}/{index}/part-0.arrow", _episode_arrow(records), now)
            episode_metadata = {
                "id": index,
                "total_steps": len(records),
                "session": spilled.session,
                "episode": spilled.episode,
                "policy_ids": sorted({int(p) for p in records["policy_id"]}),
            }
            _add_file(archive, f"{data_dir}/{index}/metadata.json", json.dumps(episode_metadata).encode(), now)
            summary.episodes += 1
            summary.steps += len(records)
        metadata = {
            "dataset_id": dataset_id,
            "total_episodes": summary.episodes,
            "total_steps": summary.steps,
            "data_format": MINARI_DATA_FORMAT,
            "jpeg_encoding": False,
            "observation_space": _serialized_box(spaces.observation_low, spaces.observation_high),
            "action_space": _serialized_box(spaces.action_low, spaces.action_high),
            "minari_version": MINARI_FORMAT_VERSION,
            "algorithm_name": "DDPG (served policy, with the recorded exploration noise)",
            "author": ["ddpg-policy-service"],
            "author_email": ["ddpg-policy-service@localhost"],
            "code_permalink": "https://github.com/ddpg-policy-service",
            "description": description or "Transitions recorded from live sessions of a served policy.",
            "requirements": [],
            "skipped_episodes": summary.skipped,
        }
        if env_spec_json is not None:
            metadata["env_spec"] = env_spec_json
        _add_file(archive, f"{data_dir}/metadata.json", json.dumps(metadata).encode(), now)
    logger.info(
        "Minari export %s: %d episodes, %d steps, skipped %s",
        dataset_id,
        summary.episodes,
        summary.steps,
        summary.skipped,
    )
    return summary
