"""Health, readiness, metrics, the one error shape, OpenAPI, and import hygiene of the app package."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import get_args

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from app.main import SERVED_ROUTES, create_app
from app.schemas.train import TrainRequest
from models.training_config import PresetName
from tests.app.conftest import Api, ApiFactory, SettingsFactory
from tests.app.factories import assert_error_shape, make_policy_bytes

REPO = Path(__file__).resolve().parents[2]


def test_healthz(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_without_a_policy_is_503_with_the_reason(api: Api) -> None:
    response = api.client.get("/readyz")
    assert response.status_code == 503
    assert "no policy" in str(assert_error_shape(response.json(), "not_ready")["message"])
    policy_id = api.add_policy(make_policy_bytes(1), promote="always")
    response = api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "policy_id": policy_id}


def test_readyz_reports_an_unreachable_database(make_settings: SettingsFactory, tmp_path: Path) -> None:
    # A directory where the SQLite file should be: the database can never open, yet the API starts.
    (tmp_path / "blocked").mkdir()
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'blocked'}")
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503 and "database" in response.json()["error"]["message"]
        assert client.get("/jobs").status_code == 503
        assert client.post("/act", json={"observation": [0, 0, 0]}).status_code == 503
        # The database comes back: the API notices by itself (bounded wait, not a timing assertion).
        (tmp_path / "blocked").rmdir()
        for _ in range(300):
            reason = client.get("/readyz").json()["error"]["message"]
            if "no policy" in reason:
                break
            time.sleep(0.1)
        assert "no policy" in reason
        assert client.get("/jobs").status_code == 200


def test_metrics_count_requests_by_route_template_and_status(api: Api) -> None:
    policy_id = api.add_policy(make_policy_bytes(1), promote="always")
    api.client.post("/act", json={"observation": [0, 0, 0]})
    api.client.post("/act", json={"observations": [[0, 0, 0]] * 5})
    api.client.post("/act", json={"observation": [0, 0]})
    api.client.get("/jobs/12345")
    api.client.get("/no/such/path/1")
    api.client.post("/train", json={})
    response = api.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'http_requests_total{method="POST",route="/act",status="200"} 2.0' in text
    assert 'http_requests_total{method="POST",route="/act",status="422"} 1.0' in text
    assert 'http_requests_total{method="GET",route="/jobs/{job_id}",status="404"} 1.0' in text
    assert 'http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_count{method="POST",route="/act",status="200"} 2.0' in text
    assert "act_batch_size_count 2.0" in text and "act_batch_size_sum 6.0" in text
    assert 'training_jobs{status="queued"} 1.0' in text and 'training_jobs{status="running"} 0.0' in text
    assert f"default_policy_id {float(policy_id)}" in text


def test_unexpected_errors_are_500_in_the_shape_without_internals(make_api: ApiFactory) -> None:
    api = make_api()

    @api.client.app.get("/boom")  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("secret internal detail at /srv/app.py line 42")

    response = api.client.get("/boom")
    assert response.status_code == 500
    assert_error_shape(response.json(), "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text and "Traceback" not in response.text


def test_database_errors_at_run_time_are_503_without_internals(make_api: ApiFactory) -> None:
    api = make_api()

    @api.client.app.get("/db-down")  # type: ignore[attr-defined]
    def db_down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("postgresql://ddpg:hunter2@db:5432 refused"))

    response = api.client.get("/db-down")
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    assert_error_shape(response.json(), "database_unavailable")
    assert "hunter2" not in response.text and "SELECT" not in response.text


def test_framework_errors_use_the_shape(api: Api) -> None:
    not_found = api.client.get("/nope")
    assert not_found.status_code == 404
    assert_error_shape(not_found.json(), "not_found")
    not_allowed = api.client.delete("/act")
    assert not_allowed.status_code == 405 and "POST" in not_allowed.headers["allow"]
    assert_error_shape(not_allowed.json(), "method_not_allowed")


def test_openapi_documents_every_endpoint_with_schemas(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    expected = {
        ("post", "/act"),
        ("post", "/train"),
        ("get", "/jobs"),
        ("get", "/jobs/{job_id}"),
        ("post", "/jobs/{job_id}/cancel"),
        ("get", "/jobs/{job_id}/rewards"),
        ("get", "/jobs/{job_id}/rewards.png"),
        ("get", "/policies"),
        ("get", "/policies/{policy_id}"),
        ("get", "/policies/{policy_id}/weights"),
        ("post", "/policies/{policy_id}/promote"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("post", "/models"),
        ("get", "/models"),
        ("get", "/models/{name}"),
        ("get", "/models/{name}/policies"),
        ("put", "/models/{name}/aliases/{alias}"),
        ("delete", "/models/{name}/aliases/{alias}"),
        ("put", "/models/{name}/rollout"),
        ("get", "/models/{name}/rollout"),
        ("delete", "/models/{name}/rollout"),
        ("post", "/models/{name}/rollout/promote"),
        ("post", "/models/{name}/rollout/rollback"),
        ("get", "/act/stream"),
    }
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert expected <= documented
    act = spec["paths"]["/act"]["post"]
    body_schema = act["requestBody"]["content"]["application/json"]["schema"]
    # Named models and sessions added `model`, `session`, `reward` and `done`; episodes cut short, `truncated`.
    assert set(body_schema["properties"]) == {
        "observation",
        "observations",
        "policy_id",
        "model",
        "session",
        "reward",
        "done",
        "truncated",
    }
    assert body_schema["additionalProperties"] is False
    assert {"200", "422", "503"} <= set(act["responses"])
    assert "ErrorResponse" in spec["components"]["schemas"]
    # FastAPI's own 422 schema must not appear: every documented error is the one shape.
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path in expected:
        assert spec["paths"][path][method].get("description") or spec["paths"][path][method].get("summary")


def test_apps_of_one_process_share_the_served_routes_yet_each_keeps_its_own_settings(make_api: ApiFactory) -> None:
    # One inclusion of the routers per process (app.main.SERVED_ROUTES): FastAPI builds their handlers once.
    locked = make_api(api_key="writer-key", act_api_key="act-key")
    open_ = make_api()
    for index, route in enumerate(SERVED_ROUTES.routes):
        assert open_.client.app.routes[index] is route and locked.client.app.routes[index] is route
    # What a route does still depends on the app that serves the request: its settings, database and policies.
    assert locked.client.post("/train", json={"episodes": 1}).status_code == 401
    assert open_.client.post("/train", json={"episodes": 1}).status_code == 202
    assert locked.client.post("/act", json={"observation": [1.0, 0.0, 0.0]}).status_code == 401
    locked_doc, open_doc = (api.client.get("/openapi.json").json() for api in (locked, open_))
    assert "security" in locked_doc["paths"]["/train"]["post"]
    assert "security" not in open_doc["paths"]["/train"]["post"]


def test_preset_names_and_hyperparameters_match_the_trainer() -> None:
    from models.training_config import FIELD_NAMES, PRESETS

    assert set(get_args(PresetName)) == set(PRESETS)
    # Every trainer knob is settable through POST /train, the environment too (it picks a new model's); `model` names
    # the model the policy joins.
    assert set(TrainRequest.model_fields) - {"preset", "promote", "model"} == set(FIELD_NAMES)


def test_importing_app_main_builds_nothing() -> None:
    code = "import app.main as m; assert m._app is None; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_serving_never_imports_torch_or_the_trainer(tmp_path: Path) -> None:
    """Import the app, start it, train-queue, act, read metrics: torch must never be loaded (subprocess)."""
    script = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from app.main import SERVED_ROUTES, create_app
        from app.settings import Settings
        from store.policies import register_policy
        from tests.app.factories import make_policy_bytes

        app = create_app(Settings(data_dir={str(tmp_path)!r}, policy_file=None))
        with TestClient(app) as client:
            with app.state.database.sessions() as session:
                register_policy(session, weights=make_policy_bytes(1), promote="always")
                session.commit()
            client.portal.call(app.state.policy_cache.refresh)
            assert client.post("/act", json={{"observation": [0, 0, 0]}}).status_code == 200
            assert client.post("/act", json={{"observations": [[0, 0, 0]] * 3}}).status_code == 200
            assert client.post("/train", json={{"episodes": 2}}).status_code == 202
            assert client.get("/metrics").status_code == 200
            assert client.get("/jobs/1/rewards.png").status_code == 200
            assert client.get("/openapi.json").status_code == 200
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "trainer")))
        print("LOADED", loaded)
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout
