"""POST /sweeps, GET /sweeps, GET /sweeps/{id} and cancel, against the database (no runner: queueing and validation).

A space is refused before anything is queued, with a 422 naming the offending dimension's value, whenever the one
training config or the server's budget would refuse a configuration a trial could get.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from store import sweeps as store_sweeps
from store.jobs import complete_job
from store.sweep_trials import begin_trial, record_heldout
from tests.app.conftest import Api, ApiFactory
from tests.conftest import make_actor_bytes, sqlite_only

SPACE = {
    "actor_lr": {"loguniform": [1e-4, 3e-3]},
    "hidden_size": {"choice": [64, 128, 256]},
    "seed": {"randint": [0, 10000]},
}


def _post(api: Api, **body: Any) -> Any:
    return api.client.post("/sweeps", json={"space": SPACE, **body})


def _field(response: Any) -> str:
    assert response.status_code == 422, response.text
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    return str(body["details"][0]["field"])


def test_a_sweep_is_queued_with_its_location(api: Api) -> None:
    response = _post(api, base={"preset": "default", "episodes": 15}, trials=16, max_concurrent=4, early_stop="asha")
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/sweeps/{body['id']}"
    assert (body["status"], body["model"], body["search"], body["early_stop"]) == ("queued", "pendulum", "tpe", "asha")
    assert (body["trials_planned"], body["max_concurrent"], body["promote"]) == (16, 4, "if_better")
    assert body["base"] == {"preset": "default", "episodes": 15}
    assert body["space"] == SPACE
    assert body["trials"] == [] and body["best_job_id"] is None and body["best"] is None
    listed = api.client.get("/sweeps").json()
    assert [item["id"] for item in listed["items"]] == [body["id"]] and listed["total"] == 1
    assert api.client.get(f"/sweeps/{body['id']}").json()["status"] == "queued"
    assert api.client.get("/sweeps?status=running").json()["total"] == 0


@sqlite_only
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"space": {"nonsense": {"choice": [1]}}}, "space.nonsense"),
        ({"space": {"env_id": {"choice": ["CartPole-v1"]}}}, "space.env_id"),
        ({"space": {"hidden_size": {"choice": [64, 0]}}}, "space.hidden_size.choice[1]"),
        ({"space": {"hidden_size": {"uniform": [16, 64]}}}, "space.hidden_size.uniform[0]"),
        ({"space": {"actor_lr": {"loguniform": [1e-4, 3.0]}}}, "space.actor_lr.loguniform[2]"),
        ({"space": {"noise": {"choice": ["ou", "pink"]}}}, "space.noise.choice[1]"),
        ({"space": {"hidden_size": {"choice": [64, 4096]}}}, "space.hidden_size.choice[1]"),
        ({"space": {"batch_size": {"choice": [64, 512]}}, "base": {"replay_size": 300}}, "space.batch_size.choice[1]"),
        ({"base": {"episodes": 5000}}, "base.episodes"),
        ({"base": {"batch_size": 512, "replay_size": 100}}, "base.replay_size"),
        ({"base": {"nope": 1}}, "base.nope"),
        ({"space": {"seed": {"randint": [5, 1]}}}, "space.seed"),
        ({"space": {"seed": {"randint": [1, 5], "choice": [1]}}}, "space.seed"),
        ({"space": {}}, "space"),
        ({"search": "grid"}, "space.actor_lr.loguniform"),
        ({"search": "grid", "space": {"hidden_size": {"choice": [64, 128]}}, "trials": 3}, "trials"),
        ({"trials": 100_000}, "trials"),
        ({"model": "Not A Name"}, "model"),
        ({"early_stop": "hyperband"}, "early_stop"),
    ],
)
def test_a_bad_sweep_is_a_422_naming_the_field_and_nothing_is_queued(
    make_api: ApiFactory, body: dict[str, Any], field: str
) -> None:
    api = make_api(train_max_episodes=1000, train_max_hidden_size=1024, sweep_max_trials=256)
    assert _field(_post(api, **body)) == field
    assert api.client.get("/sweeps").json()["total"] == 0


def test_a_grid_of_choices_with_its_size_as_trials_is_queued(api: Api) -> None:
    response = _post(
        api, search="grid", space={"hidden_size": {"choice": [32, 64]}, "seed": {"choice": [1, 2, 3]}}, trials=6
    )
    assert response.status_code == 202, response.text


def test_cancel_a_queued_sweep_then_again_is_a_conflict(api: Api) -> None:
    sweep_id = _post(api).json()["id"]
    cancelled = api.client.post(f"/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api.client.post(f"/sweeps/{sweep_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert api.client.post("/sweeps/999/cancel").status_code == 404
    assert api.client.get("/sweeps/999").status_code == 404


def test_a_running_sweep_shows_its_trials_and_cancel_reaches_them(api: Api) -> None:
    sweep_id = _post(api).json()["id"]
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        assert store_sweeps.claim_next_sweep(session, runner_id="runner", lease_seconds=30) is not None
        job_id = begin_trial(
            session, sweep_id=sweep_id, trial_id="abc", params={"seed": 3}, config={"preset": "default", "seed": 3},
            worker_id="ray-abc", node="node-x", node_ip="127.0.0.1", lease_seconds=30,
        )  # fmt: skip
    body = api.client.get(f"/sweeps/{sweep_id}").json()
    [trial] = body["trials"]
    assert (trial["job_id"], trial["status"], trial["node"], trial["params"]) == (
        job_id,
        "running",
        "node-x",
        {"seed": 3},
    )
    assert trial["wall_time"] is not None and trial["wall_time"] >= 0
    assert api.client.get(f"/jobs/{job_id}").json()["status"] == "running"  # a trial is a job like any other
    cancelled = api.client.post(f"/sweeps/{sweep_id}/cancel").json()
    assert cancelled["status"] == "running" and cancelled["cancel_requested"] is True
    assert api.client.get(f"/jobs/{job_id}").json()["cancel_requested"] is True


def test_the_api_key_guards_creating_and_cancelling(make_api: ApiFactory) -> None:
    api = make_api(api_key="secret")
    assert _post(api).status_code == 401
    headers = {"Authorization": "Bearer secret"}
    sweep_id = api.client.post("/sweeps", json={"space": SPACE}, headers=headers).json()["id"]
    assert api.client.post(f"/sweeps/{sweep_id}/cancel").status_code == 401


def test_the_sweep_page_and_its_assets_are_served_from_this_host_only(api: Api) -> None:
    page = api.client.get("/static/sweeps.html")
    assert page.status_code == 200 and "<title>Sweeps" in page.text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert "/static/sweeps.js" in assets
    for asset in assets:
        response = api.client.get(asset)
        assert response.status_code == 200, asset
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", response.text) and 'fetch("http' not in response.text
    assert 'href="/static/sweeps.html"' in api.client.get("/").text  # reachable from the dashboard


def test_a_finished_sweep_names_its_best_trial_and_policy(api: Api) -> None:
    sweep_id = _post(api).json()["id"]
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        assert store_sweeps.claim_next_sweep(session, runner_id="runner", lease_seconds=30) is not None
        job_id = begin_trial(
            session, sweep_id=sweep_id, trial_id="abc", params={"seed": 3}, config={"preset": "default", "seed": 3},
            worker_id="ray-abc", node="node-x", node_ip="127.0.0.1", lease_seconds=30,
        )  # fmt: skip
        assert job_id is not None
        record_heldout(session, job_id, worker_id="ray-abc", mean_return=-150.0, std_return=3.0)
        complete_job(session, job_id, worker_id="ray-abc", weights=make_actor_bytes(-160.0))
        store_sweeps.finish_sweep(session, sweep_id, runner_id="runner", status="succeeded")
    body = api.client.get(f"/sweeps/{sweep_id}").json()
    assert body["status"] == "succeeded" and body["best_job_id"] == job_id
    assert body["best"]["heldout_return"] == -150.0 and body["best"]["policy_id"] == body["policy_id"] is not None
