"""GET /models/{name}/experience/dataset over the app: Minari and Parquet from chunks stored in the database or
under EXPERIENCE_URL, and bad input answered with a 4xx naming the field."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import minari
import numpy as np
import pyarrow.parquet as pq
import pytest

from models.experience_chunks import ExperienceColumns, encode_chunk
from store.chunk_storage import FsspecChunkStorage
from store.tables import ExperienceChunk, Model
from tests.app.conftest import Api, ApiFactory
from tests.models.test_experience_export import EPISODES, OBS_DIM, _episode_columns

MODEL = "pendulum-live"


def _create_model(api: Api, name: str = MODEL) -> int:
    response = api.client.post("/models", json={"name": name, "env_id": "Pendulum-v1"})
    assert response.status_code == 201, response.text
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model = session.query(Model).filter_by(name=name).one()
        return int(model.id)


def _store_chunks(api: Api, model_id: int, chunks: list[ExperienceColumns], storage: FsspecChunkStorage | None) -> None:
    """Chunk rows as a flush writes them: the bytes in the row, or in storage under a key named by the row."""
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        for columns in chunks:
            data = encode_chunk(columns)
            flush_id = uuid.uuid4().hex
            key = f"{model_id}/{flush_id}"
            if storage is not None:
                storage.put(key, data)
            session.add(
                ExperienceChunk(
                    model_id=model_id,
                    flush_id=flush_id,
                    first_time=float(columns.time.min()),
                    last_time=float(columns.time.max()),
                    transitions=len(columns),
                    episodes=columns.episodes_ended(),
                    size_bytes=len(data),
                    policy_counts={},
                    returns={},
                    data=None if storage is not None else data,
                    storage_key=key if storage is not None else None,
                )
            )
        session.commit()


def _pendulum_recording() -> tuple[list[ExperienceColumns], dict[tuple[str, int], ExperienceColumns]]:
    """The episodes of the unit tests, with Pendulum's 3 observations and 1 action, in three chunks."""
    assert OBS_DIM == 3
    rng = np.random.default_rng(3)
    whole = {(e.session, e.episode): _episode_columns(e, rng) for e in EPISODES}
    everything = ExperienceColumns.concat(list(whole.values()))
    order = np.argsort(everything.time, kind="stable")
    in_time = everything.take(order)
    thirds = np.array_split(np.arange(len(in_time)), 3)
    return [in_time.take(rows) for rows in thirds], whole


def _check_minari(archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole) -> None:
    datasets = tmp_path / "datasets"
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(datasets, filter="data")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    dataset = minari.load_dataset(f"ddpg-service/{MODEL}/recorded-v0")
    ended = [e for e in EPISODES if e.end != "open"]  # nothing lost here: only the open one is left out
    assert dataset.total_episodes == len(ended)
    metadata = dataset.storage.get_episode_metadata(range(len(ended)))
    for episode, meta in zip(dataset.iterate_episodes(), metadata, strict=True):
        columns = whole[(meta["session"], meta["episode"])]
        assert np.array_equal(episode.observations[:-1], columns.observation)
        assert np.array_equal(episode.observations[-1], columns.next_observation[-1])
        assert np.array_equal(episode.actions, columns.action)
        assert np.array_equal(episode.rewards, columns.reward)
        assert np.array_equal(episode.terminations, columns.terminated)
        assert np.array_equal(episode.truncations, columns.truncated)


def test_minari_and_parquet_exports_from_database_chunks(make_api: ApiFactory, tmp_path, monkeypatch) -> None:
    api = make_api()
    chunks, whole = _pendulum_recording()
    _store_chunks(api, _create_model(api), chunks, storage=None)

    response = api.client.get(f"/models/{MODEL}/experience/dataset", params={"format": "minari"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["x-experience-episodes"] == str(sum(e.end != "open" for e in EPISODES))
    assert "not_ended=1" in response.headers["x-experience-skipped-episodes"]
    _check_minari(response.content, tmp_path, monkeypatch, whole)

    response = api.client.get(f"/models/{MODEL}/experience/dataset", params={"format": "parquet"})
    assert response.status_code == 200, response.text
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == sum(e.length for e in EPISODES)  # every transition, the open episode's too
    assert set(table.column("session").to_pylist()) == {e.session for e in EPISODES}


def test_chunks_under_experience_url_are_read_from_the_directory(make_api: ApiFactory, tmp_path, monkeypatch) -> None:
    url = f"file://{tmp_path}/experience"
    api = make_api(experience_url=url)
    chunks, whole = _pendulum_recording()
    model_id = _create_model(api)
    _store_chunks(api, model_id, chunks[:2], storage=FsspecChunkStorage(url))
    _store_chunks(api, model_id, chunks[2:], storage=None)  # written before EXPERIENCE_URL was set: still read
    response = api.client.get(f"/models/{MODEL}/experience/dataset")
    assert response.status_code == 200, response.text
    _check_minari(response.content, tmp_path, monkeypatch, whole)


def test_chunks_in_storage_without_experience_url_is_a_503_that_says_so(make_api: ApiFactory, tmp_path) -> None:
    api = make_api()
    chunks, _ = _pendulum_recording()
    _store_chunks(api, _create_model(api), chunks, storage=FsspecChunkStorage(f"file://{tmp_path}/elsewhere"))
    response = api.client.get(f"/models/{MODEL}/experience/dataset")
    assert response.status_code == 503
    assert "EXPERIENCE_URL" in response.json()["error"]["message"]


def test_bad_input_is_a_4xx_naming_the_field(make_api: ApiFactory) -> None:
    api = make_api()
    _create_model(api, "never-recorded")
    response = api.client.get("/models/never-recorded/experience/dataset", params={"format": "hdf5"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "format"

    response = api.client.get("/models/no-such-model/experience/dataset")
    assert response.status_code == 404
    assert response.json()["error"]["details"][0]["field"] == "name"

    response = api.client.get("/models/never-recorded/experience/dataset", params={"format": "parquet"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "no_experience" and error["details"][0]["field"] == "name"


def test_the_route_is_documented_with_both_file_types() -> None:
    from app.main import create_app
    from app.settings import Settings

    schema = create_app(Settings()).openapi()
    operation = schema["paths"]["/models/{name}/experience/dataset"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"application/gzip", "application/vnd.apache.parquet"}
    assert "minari.load_dataset" in operation["responses"]["200"]["description"]
    assert {"404", "422", "503"} <= set(operation["responses"])
