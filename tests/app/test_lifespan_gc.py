"""A started API process keeps its start-up objects out of full garbage collections (app.lifespan)."""

import gc

from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import SettingsFactory


def test_startup_freezes_the_objects_alive_after_start_up(make_settings: SettingsFactory) -> None:
    # Full collections walking every library object stalled /act for ~100 ms each (bench/serve_bench.py).
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/healthz").status_code == 200
        frozen = gc.get_freeze_count()
    gc.unfreeze()  # leave this test process as it was
    # Everything imported and loaded by then: FastAPI, SQLAlchemy, numba, the app itself.
    assert frozen > 50_000
