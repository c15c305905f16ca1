"""The offline-RL exports of recorded experience: minari.load_dataset reads the Minari archive back with exactly the
episodes that ended, and pyarrow reads the Parquet file with every transition."""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import minari
import numpy as np
import pyarrow.parquet as pq
import pytest

from models.experience_chunks import ExperienceColumns, decode_chunk, encode_chunk
from models.experience_export import BoxSpaces, minari_dataset_id, write_minari_archive, write_parquet
from tests.experience_data import ACT_DIM, EPISODES, OBS_DIM, SPACES, Episode, episode_columns


@pytest.fixture(scope="module")
def recorded() -> tuple[list[ExperienceColumns], dict[tuple[str, int], ExperienceColumns]]:
    """The episodes' transitions interleaved in time, lost steps dropped, cut into chunks of uneven sizes (encoded
    and decoded, as the store hands them out); and each episode's full transitions."""
    rng = np.random.default_rng(7)
    whole = {(spec.session, spec.episode): episode_columns(spec, rng) for spec in EPISODES}
    kept = []
    for spec in EPISODES:
        columns = whole[(spec.session, spec.episode)]
        rows = np.array([step for step in range(spec.length) if step != spec.lose_step])
        kept.append(columns.take(rows))
    everything = ExperienceColumns.concat(kept)
    in_time = everything.take(rng.permutation(len(everything)))  # interleaved: steps arrive out of order too
    cuts = [0, 3, 4, 13, 20, len(in_time)]
    chunks = [decode_chunk(encode_chunk(in_time.take(slice(a, b)))) for a, b in itertools.pairwise(cuts)]
    return chunks, whole


def _load(archive: bytes, datasets: Path, monkeypatch: pytest.MonkeyPatch, dataset_id: str) -> minari.MinariDataset:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(datasets, filter="data")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    return minari.load_dataset(dataset_id)


def test_minari_archive_holds_exactly_the_ended_episodes(recorded, tmp_path: Path, monkeypatch) -> None:
    chunks, whole = recorded
    dataset_id = minari_dataset_id("pendulum-live")
    sink = io.BytesIO()
    summary = write_minari_archive(iter(chunks), sink, dataset_id=dataset_id, spaces=SPACES, work_dir=tmp_path / "w")
    assert summary.skipped == {"not_ended": 1, "missing_steps": 1, "after_end": 0}
    assert not any((tmp_path / "w").rglob("*.bin")), "the spill is left empty"

    dataset = _load(sink.getvalue(), tmp_path / "datasets", monkeypatch, dataset_id)
    expected = [spec for spec in EPISODES if spec.end != "open" and spec.lose_step is None]
    assert dataset.total_episodes == len(expected) == summary.episodes
    assert dataset.total_steps == sum(spec.length for spec in expected) == summary.steps
    assert dataset.observation_space.shape == (OBS_DIM,)
    assert np.isinf(dataset.observation_space.high[2])
    assert dataset.action_space.low.tolist() == [-2.0]

    loaded = {}
    for episode, metadata in zip(
        dataset.iterate_episodes(), dataset.storage.get_episode_metadata(range(len(expected))), strict=True
    ):
        loaded[(metadata["session"], metadata["episode"])] = episode
        assert metadata["total_steps"] == len(episode.rewards)
    assert set(loaded) == {(spec.session, spec.episode) for spec in expected}
    for key, episode in loaded.items():
        columns = whole[key]
        assert np.array_equal(
            episode.observations, np.concatenate([columns.observation, columns.next_observation[-1:]])
        )
        assert np.array_equal(episode.actions, columns.action)
        assert np.array_equal(episode.rewards, columns.reward)
        assert np.array_equal(episode.terminations, columns.terminated)
        assert np.array_equal(episode.truncations, columns.truncated)
        assert np.array_equal(episode.infos["noise"][:-1], columns.noise)
        assert np.array_equal(episode.infos["policy_id"][:-1], columns.policy_id)
    # The sampling API works on it too.
    assert len(dataset.sample_episodes(2)) == 2


def test_minari_archive_without_ended_episodes_is_an_empty_dataset(recorded, tmp_path, monkeypatch) -> None:
    chunks, _ = recorded
    open_only = [c.take(np.flatnonzero(c.session == "gamma")) for c in chunks]
    sink = io.BytesIO()
    summary = write_minari_archive(
        open_only, sink, dataset_id="ddpg-service/m/recorded-v0", spaces=SPACES, work_dir=tmp_path
    )
    assert summary.episodes == 0 and summary.skipped["not_ended"] == 1
    dataset = _load(sink.getvalue(), tmp_path / "datasets", monkeypatch, "ddpg-service/m/recorded-v0")
    assert dataset.total_episodes == 0


def test_a_step_after_the_end_leaves_the_episode_out(tmp_path) -> None:
    rng = np.random.default_rng(1)
    columns = episode_columns(Episode("s", 1, 4, "terminated"), rng)
    broken = ExperienceColumns(**{**{name: getattr(columns, name) for name in columns.__dataclass_fields__}})
    broken.terminated[1] = True
    broken.terminated[3] = False
    summary = write_minari_archive([broken], io.BytesIO(), dataset_id="a/b-v0", spaces=SPACES, work_dir=tmp_path)
    assert summary.skipped["after_end"] == 1 and summary.episodes == 0


def test_minari_export_refuses_transitions_of_other_dimensions(recorded, tmp_path) -> None:
    chunks, _ = recorded
    spaces = BoxSpaces((0.0, 0.0), (1.0, 1.0), (-1.0,), (1.0,))
    with pytest.raises(ValueError, match="obs_dim 3"):
        write_minari_archive(chunks, io.BytesIO(), dataset_id="a/b-v0", spaces=spaces, work_dir=tmp_path)


def test_parquet_holds_every_transition_with_its_columns(recorded) -> None:
    chunks, _ = recorded
    sink = io.BytesIO()
    rows = write_parquet(iter(chunks), sink, obs_dim=OBS_DIM, act_dim=ACT_DIM)
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    everything = ExperienceColumns.concat(chunks)
    assert rows == table.num_rows == len(everything)
    assert table.column_names[:6] == ["observation", "action", "reward", "next_observation", "terminated", "truncated"]
    assert np.array_equal(np.stack(table.column("observation").to_numpy(zero_copy_only=False)), everything.observation)
    assert table.column("session").to_pylist() == everything.session.tolist()
    assert np.array_equal(table.column("episode").to_numpy(), everything.episode)


def test_parquet_without_transitions_is_a_typed_empty_file() -> None:
    sink = io.BytesIO()
    assert write_parquet([], sink, obs_dim=OBS_DIM, act_dim=ACT_DIM) == 0
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.num_rows == 0 and "next_observation" in table.column_names
