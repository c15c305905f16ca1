"""POST /act on the fast path (app.serving.fast_path): answered ahead of every middleware, yet with the same
metrics, body limit, error shape and headers the middleware stack gives every other route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from app.main import create_app
from tests.app.conftest import Api, ApiFactory, SettingsFactory
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.conftest import sqlite_only

# SQLite only: the fast path is in front of the store, the same whichever database is behind it.
pytestmark = sqlite_only


class CountingMiddleware:
    """Counts the HTTP requests that reach the middleware stack."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def metric_lines(client: TestClient) -> list[str]:
    return [line for line in client.get("/metrics").text.splitlines() if line.startswith("http_requests_total{")]


@pytest.fixture
def counted_client(make_settings: SettingsFactory) -> Iterator[tuple[TestClient, list[str]]]:
    app = create_app(make_settings())
    seen: list[str] = []
    app.add_middleware(CountingMiddleware, seen=seen)  # outermost of the stack, inside Starlette's error middleware
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, seen


def test_post_act_is_answered_ahead_of_the_middleware_stack(
    counted_client: tuple[TestClient, list[str]],
) -> None:
    client, seen = counted_client
    Api(client).add_policy(make_policy_bytes(1), promote="always")
    seen.clear()
    assert client.post("/act", json={"observation": [0, 0, 0]}).status_code == 200
    assert client.post("/act", json={"observation": "x"}).status_code == 422
    assert seen == []
    # Everything else goes through the stack: other methods on the same path, other paths.
    assert client.get("/act").status_code == 405
    assert client.get("/healthz").status_code == 200
    assert seen == ["GET /act", "GET /healthz"]


def test_fast_path_statuses_are_counted_as_the_metrics_middleware_counts_them(make_api: ApiFactory) -> None:
    api = make_api(act_api_key="act-secret", max_body_bytes=2048)
    api.add_policy(make_policy_bytes(1), promote="always")
    key = {"Authorization": "Bearer act-secret"}
    assert api.client.post("/act", json={"observation": [0, 0, 0]}, headers=key).status_code == 200
    assert api.client.post("/act", json={"observation": [0, 0, 0]}).status_code == 401
    text = {"content-type": "text/csv", **key}
    assert api.client.post("/act", content=b"0,0,0", headers=text).status_code == 415
    assert api.client.post("/act", json={"observation": [0, 0]}, headers=key).status_code == 422
    big = b'{"observations": [' + b",".join([b"[0.0, 0.0, 0.0]"] * 200) + b"]}"
    json_key = {"content-type": "application/json", **key}
    # Declared too large: answered before any route is chosen, counted as the body-size middleware's 413s are.
    assert api.client.post("/act", content=big, headers=json_key).status_code == 413
    # Undeclared (streamed) and too large: found while reading /act's body.
    assert api.client.post("/act", content=iter([big]), headers=json_key).status_code == 413
    lines = metric_lines(api.client)
    for status in (200, 401, 415, 422, 413):
        assert f'http_requests_total{{method="POST",route="/act",status="{status}"}} 1.0' in lines, lines
    assert 'http_requests_total{method="POST",route="<unmatched>",status="413"} 1.0' in lines, lines
    durations = api.client.get("/metrics").text
    assert 'http_request_duration_seconds_count{method="POST",route="/act",status="200"} 1.0' in durations


def test_the_key_is_checked_before_a_streamed_body_is_read(make_api: ApiFactory) -> None:
    api = make_api(act_api_key="act-secret", max_body_bytes=2048)
    big = b'{"observations": [' + b",".join([b"[0.0, 0.0, 0.0]"] * 200) + b"]}"
    response = api.client.post("/act", content=iter([big]), headers={"content-type": "application/json"})
    assert response.status_code == 401
    assert_error_shape(response.json(), "unauthorized")


def test_an_unhandled_error_is_a_500_in_the_error_shape_counted_and_raised(make_settings: SettingsFactory) -> None:
    # Without its lifespan the app has no /act runtime: the fast path's lookup fails as no handler expects.
    app = create_app(make_settings())
    response = TestClient(app, raise_server_exceptions=False).post("/act", json={"observation": [0, 0, 0]})
    assert response.status_code == 500
    assert_error_shape(response.json(), "internal_error")
    exposition = app.state.metrics.exposition().decode()
    assert 'http_requests_total{method="POST",route="/act",status="500"} 1.0' in exposition
    with pytest.raises(LookupError):  # re-raised for the server to log, as Starlette's ServerErrorMiddleware does
        TestClient(app).post("/act", json={"observation": [0, 0, 0]})


def test_every_answer_carries_its_own_length_and_type(make_api: ApiFactory) -> None:
    api = make_api()
    api.add_policy(make_policy_bytes(1), promote="always")
    bodies = [{"observation": [0, 0, 0]}, {"observations": [[0.1, 0.2, 0.3]] * 3}, {"observation": [5, -5, 0.5]}]
    for body in bodies * 2:  # twice: the second answers of each length reuse the prebuilt response starts
        response = api.client.post("/act", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        response.json()


def test_a_root_path_is_stripped_as_the_router_strips_it(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(bench_endpoints=True))
    with TestClient(app, root_path="/api") as client:
        response = client.post("/api/bench/noop", json={"observation": [0, 0, 0]})
        assert response.status_code == 200 and response.json() == {"ok": True}
        lines = metric_lines(client)
    assert 'http_requests_total{method="POST",route="/bench/noop",status="200"} 1.0' in lines, lines
