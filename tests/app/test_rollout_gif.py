"""GET /policies/{id}/rollout.gif: an animated GIF of one episode, cached per policy, with ETag revalidation."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.services import policy_files
from models.episode_gif import RenderUnavailableError, read_gif_comment
from tests.app.conftest import Api
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.conftest import sqlite_only

# SQLite only: rendering and its cache are the same whichever database holds the policy.
pytestmark = sqlite_only


def test_rollout_gif_is_an_animated_gif_of_the_policy(api: Api) -> None:
    policy_id = api.add_policy(make_policy_bytes(3))
    response = api.client.get(f"/policies/{policy_id}/rollout.gif")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/gif"
    assert response.content[:6] == b"GIF89a"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.n_frames > 10
    summary = read_gif_comment(response.content)
    assert summary["env"] == "Pendulum-v1" and int(summary["steps"]) == 200
    assert "max-age" in response.headers["cache-control"]

    etag = response.headers["etag"]
    again = api.client.get(f"/policies/{policy_id}/rollout.gif", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = api.client.get(f"/policies/{policy_id}/rollout.gif", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == response.content


def test_different_policies_have_different_etags(api: Api) -> None:
    first = api.add_policy(make_policy_bytes(1))
    second = api.add_policy(make_policy_bytes(2))
    etags = {api.client.get(f"/policies/{i}/rollout.gif").headers["etag"] for i in (first, second)}
    assert len(etags) == 2


def test_unknown_policy_is_404(api: Api) -> None:
    response = api.client.get("/policies/999/rollout.gif")
    assert response.status_code == 404
    assert_error_shape(response.json(), "not_found")
    assert api.client.get("/policies/0/rollout.gif").status_code == 422


def test_render_unavailable_is_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_id = api.add_policy(make_policy_bytes(5))

    def unavailable(weights: bytes, *, seed: int = 0) -> bytes:
        raise RenderUnavailableError("gymnasium is not installed here")

    monkeypatch.setattr("app.services.policy_files.episode_gif_for_weights", unavailable)
    response = api.client.get(f"/policies/{policy_id}/rollout.gif")
    assert response.status_code == 503
    assert_error_shape(response.json(), "render_unavailable")


def test_rollout_gif_is_documented_as_image_gif(api: Api) -> None:
    operation = api.client.get("/openapi.json").json()["paths"]["/policies/{policy_id}/rollout.gif"]["get"]
    assert "image/gif" in operation["responses"]["200"]["content"]
    assert operation["responses"]["404"]["content"]["application/json"]


def test_rendering_is_cached_per_policy(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_id = api.add_policy(make_policy_bytes(6))
    renders: list[int] = []
    real_render = policy_files.episode_gif_for_weights

    def counting_render(weights: bytes, *, seed: int = 0) -> bytes:
        renders.append(1)
        return real_render(weights, seed=seed)

    monkeypatch.setattr(policy_files, "episode_gif_for_weights", counting_render)
    first = api.client.get(f"/policies/{policy_id}/rollout.gif")
    second = api.client.get(f"/policies/{policy_id}/rollout.gif")
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert len(renders) == 1
