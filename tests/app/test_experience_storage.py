"""EXPERIENCE_URL through the app: recorded chunks' bytes land in a directory or on a real S3-compatible server
(moto_server as a process), rows keep only the key, exports read them back, and retention and DELETE remove the
objects as well as the rows."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import minari
import numpy as np
import pytest
from sqlalchemy import select

from store.chunk_storage import ChunkMissingError, FsspecChunkStorage
from store.tables.serving_records import ExperienceChunk
from tests.app.conftest import Api, ApiFactory
from tests.app.test_experience_api import _arm_with_champion, _flush
from tests.s3_server import S3Server, running_s3_server


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(params=["file", "s3"])
def experience_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/experience"
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"exp-{abs(hash(str(tmp_path))) % 10**8}"
    server.create_bucket(bucket)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{bucket}/recorded"


def _episode(api: Api, session: str, steps: int, ending: str = "done") -> None:
    for step in range(steps):
        body: dict[str, Any] = {"model": "arm", "session": session, "observation": [step, 0.5, 0, 0]}
        if step:
            body["reward"] = float(step)
        assert api.client.post("/act", json=body).status_code == 200
    final = {"model": "arm", "session": session, "observation": [steps, 0, 0, 0], "reward": 1.0, ending: True}
    assert api.client.post("/act", json=final).status_code == 200


def _rows(api: Api) -> list[tuple[bytes | None, str | None]]:
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        rows = session.execute(
            select(ExperienceChunk.data, ExperienceChunk.storage_key).order_by(ExperienceChunk.id)
        ).all()
    return [(data, key) for data, key in rows]


def test_chunks_live_in_storage_and_leave_with_their_rows(
    make_api: ApiFactory, experience_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One chunk per explicit flush: a background flush in the middle of an episode would split it.
    api = make_api(experience_url=experience_url, experience_flush_seconds=60)
    _arm_with_champion(api)
    assert api.client.put("/models/arm/experience", json={"record": True, "max_transitions": 100}).status_code == 200
    for index in range(3):  # three flushes: three chunks
        _episode(api, f"s{index}", 4, "done" if index % 2 else "truncated")
        _flush(api)
    rows = _rows(api)
    assert len(rows) == 3
    assert all(data is None and key for data, key in rows), "the rows keep only the key"
    storage = FsspecChunkStorage(experience_url)
    keys = [key for _, key in rows if key is not None]
    assert all(len(storage.get(key)) > 0 for key in keys)

    exported = api.client.get("/models/arm/experience/dataset", params={"format": "minari"})
    assert exported.status_code == 200, exported.text
    with tarfile.open(fileobj=io.BytesIO(exported.content), mode="r:gz") as tar:
        tar.extractall(tmp_path / "datasets", filter="data")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    dataset = minari.load_dataset("ddpg-service/arm/recorded-v0")
    assert dataset.total_episodes == 3 and dataset.total_steps == 12
    for episode in dataset.iterate_episodes():
        assert episode.observations[:, 0].tolist() == [0, 1, 2, 3, 4]
        assert np.array_equal(episode.rewards, [1, 2, 3, 1])

    # A lower limit: the oldest chunk's row and object go (the newest two still hold 8 >= 5 transitions).
    assert api.client.put("/models/arm/experience", json={"record": True, "max_transitions": 5}).status_code == 200
    remaining = [key for _, key in _rows(api)]
    assert remaining == keys[1:]
    with pytest.raises(ChunkMissingError):
        storage.get(keys[0])

    # Retention inside a flush deletes the objects too.
    _episode(api, "s3", 6)
    _flush(api)
    after_flush = [key for _, key in _rows(api)]
    assert keys[1] not in after_flush
    with pytest.raises(ChunkMissingError):
        storage.get(keys[1])

    assert api.client.delete("/models/arm/experience").status_code == 204
    assert _rows(api) == []
    for key in after_flush:
        assert key is not None
        with pytest.raises(ChunkMissingError):
            storage.get(key)
