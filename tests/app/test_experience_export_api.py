"""GET /models/{name}/experience/dataset over the app: Minari and Parquet from chunks stored in the database or
under EXPERIENCE_URL, and bad input answered with a 4xx naming the field."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import minari
import numpy as np
import pyarrow.parquet as pq
import pytest

from store.chunk_storage import FsspecChunkStorage
from store.tables.registry import Model
from store.tables.serving_records import ExperienceChunk
from tests.app.conftest import ApiFactory
from tests.app.experience_store import MODEL, create_model, pendulum_recording, store_chunks
from tests.experience_data import EPISODES


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
    chunks, whole = pendulum_recording()
    store_chunks(api, create_model(api), chunks, storage=None)

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
    chunks, whole = pendulum_recording()
    model_id = create_model(api)
    store_chunks(api, model_id, chunks[:2], storage=FsspecChunkStorage(url))
    store_chunks(api, model_id, chunks[2:], storage=None)  # written before EXPERIENCE_URL was set: still read
    response = api.client.get(f"/models/{MODEL}/experience/dataset")
    assert response.status_code == 200, response.text
    _check_minari(response.content, tmp_path, monkeypatch, whole)


def test_chunks_in_storage_without_experience_url_is_a_503_that_says_so(make_api: ApiFactory, tmp_path) -> None:
    api = make_api()
    chunks, _ = pendulum_recording()
    store_chunks(api, create_model(api), chunks, storage=FsspecChunkStorage(f"file://{tmp_path}/elsewhere"))
    response = api.client.get(f"/models/{MODEL}/experience/dataset")
    assert response.status_code == 503
    assert "EXPERIENCE_URL" in response.json()["error"]["message"]


def test_bad_input_is_a_4xx_naming_the_field(make_api: ApiFactory) -> None:
    api = make_api()
    create_model(api, "never-recorded")
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


def test_a_chunk_removed_while_an_export_reads_is_skipped(make_api: ApiFactory, tmp_path: Path) -> None:
    """Retention may delete rows and objects between the id snapshot and the read: those chunks are skipped, the
    rest are read in order."""
    from store.experience_reading import chunk_ids, iter_chunks

    url = f"file://{tmp_path}/experience"
    api = make_api(experience_url=url)
    chunks, _ = pendulum_recording()
    storage = FsspecChunkStorage(url)
    store_chunks(api, create_model(api), chunks, storage=storage)
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model_id = session.query(Model).filter_by(name=MODEL).one().id
        ids = chunk_ids(session, model_id)
        keys = dict(session.query(ExperienceChunk.id, ExperienceChunk.storage_key).all())
        storage.delete([keys[ids[0]]])  # its object is gone, its row not yet
        session.query(ExperienceChunk).filter_by(id=ids[1]).delete()  # its row is gone
        session.commit()
        read = list(iter_chunks(session, ids, storage))
    assert len(read) == 1
    assert np.array_equal(read[0].time, chunks[2].time)


def test_exporting_never_imports_torch_jax_or_minari(tmp_path: Path) -> None:
    """The API process builds both exports with pyarrow alone: minari's writer would pull jax, torch is the
    trainer's."""
    import subprocess
    import sys
    import textwrap

    from tests.app.servers import REPO

    script = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from app.main import create_app
        from app.settings import Settings
        from tests.app.experience_store import create_model, pendulum_recording, store_chunks
        from tests.app.conftest import Api

        app = create_app(Settings(data_dir={str(tmp_path)!r}, policy_file=None))
        with TestClient(app) as client:
            api = Api(client)
            store_chunks(api, create_model(api), pendulum_recording()[0], storage=None)
            for export_format in ("minari", "parquet"):
                answer = client.get("/models/{MODEL}/experience/dataset", params={{"format": export_format}})
                assert answer.status_code == 200, answer.text
        heavy = ("torch", "jax", "jaxlib", "minari", "trainer")
        print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout
