"""Recorded chunks written straight into an app's database (as a flush writes them), for the export tests. Imports
no minari: a subprocess that checks what the API process imports uses it."""

from __future__ import annotations

import uuid

import numpy as np

from models.experience_chunks import ExperienceColumns, encode_chunk
from store.chunk_storage import FsspecChunkStorage
from store.tables.registry import Model
from store.tables.serving_records import ExperienceChunk
from tests.app.conftest import Api
from tests.experience_data import EPISODES, OBS_DIM, episode_columns

MODEL = "pendulum-live"


def create_model(api: Api, name: str = MODEL) -> int:
    response = api.client.post("/models", json={"name": name, "env_id": "Pendulum-v1"})
    assert response.status_code == 201, response.text
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        model = session.query(Model).filter_by(name=name).one()
        return int(model.id)


def store_chunks(api: Api, model_id: int, chunks: list[ExperienceColumns], storage: FsspecChunkStorage | None) -> None:
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


def pendulum_recording() -> tuple[list[ExperienceColumns], dict[tuple[str, int], ExperienceColumns]]:
    """The episodes of the unit tests, with Pendulum's 3 observations and 1 action, in three chunks."""
    assert OBS_DIM == 3
    rng = np.random.default_rng(3)
    whole = {(e.session, e.episode): episode_columns(e, rng) for e in EPISODES}
    everything = ExperienceColumns.concat(list(whole.values()))
    order = np.argsort(everything.time, kind="stable")
    in_time = everything.take(order)
    thirds = np.array_split(np.arange(len(in_time)), 3)
    return [in_time.take(rows) for rows in thirds], whole
