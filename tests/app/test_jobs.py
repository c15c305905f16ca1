"""POST /train and /jobs: queueing, bounds, the queue limit, listing, progress, cancel, reward histories."""

from __future__ import annotations

import csv
import io

import pytest

from store.jobs import claim_next_job, complete_job, record_episode, record_evaluation
from tests.app.conftest import Api, ApiFactory
from tests.app.factories import assert_error_shape, make_policy_bytes
from tests.conftest import sqlite_only

AUTH = {"Authorization": "Bearer admin-key"}


def run_job_partly(api: Api, episodes: int, *, evaluate_after: tuple[int, ...] = ()) -> int:
    """Act as a worker: claim the oldest queued job and record some episodes (and evaluations)."""
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        job = claim_next_job(session, worker_id="test-worker", lease_seconds=300)
        assert job is not None
        for episode in range(episodes):
            record_episode(
                session,
                job.id,
                worker_id="test-worker",
                lease_seconds=300,
                episode=episode,
                episode_return=-1000.0 + 100 * episode,
                avg_return_10=-1000.0 + 50 * episode,
                env_steps=200 * (episode + 1),
                wall_time=0.5 * (episode + 1),
            )
            if episode in evaluate_after:
                record_evaluation(
                    session,
                    job.id,
                    worker_id="test-worker",
                    episode=episode,
                    env_steps=200 * (episode + 1),
                    mean_return=-300.0 + episode,
                    std_return=12.5,
                    wall_time=0.5 * (episode + 1),
                )
        return job.id


def test_train_queues_a_job_with_202_and_location(api: Api) -> None:
    response = api.client.post("/train", json={"preset": "seed", "episodes": 20, "seed": 5, "hidden_size": 64})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["promote"] == "if_better"
    assert job["config"] == {"preset": "seed", "episodes": 20, "seed": 5, "hidden_size": 64}
    assert job["progress"] == {
        "episodes_done": 0,
        "episodes_total": 20,
        "env_steps": 0,
        "last_return": None,
        "best_eval_return": None,
    }
    assert api.client.get(response.headers["location"]).json() == job


def test_train_with_no_body_fields_uses_the_default_preset(api: Api) -> None:
    response = api.client.post("/train", json={})
    assert response.status_code == 202 and response.json()["config"] == {"preset": "default"}


def test_every_hyperparameter_is_accepted_by_its_trainer_name(api: Api) -> None:
    body = {
        "preset": "default",
        "seed": 1,
        "episodes": 3,
        "max_episode_steps": 100,
        "hidden_size": 32,
        "actor_lr": 1e-3,
        "critic_lr": 2e-3,
        "gamma": 0.99,
        "tau": 0.005,
        "batch_size": 64,
        "replay_size": 10000,
        "learning_starts": 100,
        "noise": "ou",
        "noise_sigma": 0.2,
        "ou_theta": 0.15,
        "eval_every": 1,
        "eval_episodes": 2,
        "export": "last",
        "random_steps": 50,
        "update_every": 2,
        "promote": "always",
    }
    response = api.client.post("/train", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["promote"] == "always"
    assert job["config"] == {k: v for k, v in body.items() if k != "promote"}
    # What the worker will do with it: the trainer accepts the stored config as is.
    from models.training_config import make_config

    config = dict(job["config"])
    resolved = make_config(config.pop("preset"), **config)
    assert resolved.noise == "ou" and resolved.update_every == 2 and resolved.episodes == 3


@sqlite_only
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"episodes": 0}, "episodes"),
        ({"episodes": 1001}, "episodes"),  # over TRAIN_MAX_EPISODES
        ({"hidden_size": 4096}, "hidden_size"),
        ({"batch_size": 100_000}, "batch_size"),
        ({"replay_size": 10_000_000}, "replay_size"),
        ({"max_episode_steps": 100_000}, "max_episode_steps"),
        ({"batch_size": 256, "replay_size": 100}, "replay_size"),
        ({"gamma": 1.5}, "gamma"),
        ({"tau": 0}, "tau"),
        ({"actor_lr": -1}, "actor_lr"),
        ({"noise": "pink"}, "noise"),
        ({"export": "first"}, "export"),
        ({"preset": "turbo"}, "preset"),
        ({"promote": "sometimes"}, "promote"),
        ({"episodes": "many"}, "episodes"),
        ({"learning_rate": 0.1}, "learning_rate"),  # unknown field
    ],
)
def test_bad_hyperparameters_are_422_naming_the_field(api: Api, body: dict[str, object], field: str) -> None:
    response = api.client.post("/train", json=body)
    assert response.status_code == 422, response.text
    error = assert_error_shape(response.json(), "validation_error")
    assert [d["field"] for d in error["details"]] == [field]  # type: ignore[attr-defined]
    assert str(error["message"]).startswith(field)


def test_train_rejects_non_json_and_missing_bodies(api: Api) -> None:
    assert api.client.post("/train", content=b"episodes=3", headers={"content-type": "text/plain"}).status_code == 415
    response = api.client.post("/train", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == "body"
    response = api.client.post("/train")
    assert response.status_code == 422
    assert_error_shape(response.json(), "validation_error")


def test_the_queue_limit_is_429(make_api: ApiFactory) -> None:
    api = make_api(max_queued_jobs=2)
    assert api.client.post("/train", json={}).status_code == 202
    assert api.client.post("/train", json={}).status_code == 202
    response = api.client.post("/train", json={})
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert_error_shape(response.json(), "queue_full")


def test_list_jobs_newest_first_filtered_and_paginated(api: Api) -> None:
    ids = [api.client.post("/train", json={"seed": i}).json()["id"] for i in range(5)]
    api.client.post(f"/jobs/{ids[1]}/cancel")
    page = api.client.get("/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
    page = api.client.get("/jobs", params={"limit": 2, "offset": 4}).json()
    assert [j["id"] for j in page["items"]] == [ids[0]]
    cancelled = api.client.get("/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[1]] and cancelled["total"] == 1
    assert api.client.get("/jobs", params={"status": "running"}).json() == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }


@sqlite_only
@pytest.mark.parametrize("params", [{"status": "sleeping"}, {"limit": 0}, {"limit": 100000}, {"offset": -1}])
def test_bad_list_parameters_are_422(api: Api, params: dict[str, object]) -> None:
    response = api.client.get("/jobs", params=params)
    assert response.status_code == 422
    assert assert_error_shape(response.json())["details"][0]["field"] == next(iter(params))  # type: ignore[index]


def test_unknown_jobs_are_404_everywhere(api: Api) -> None:
    for method, path in [
        ("GET", "/jobs/999"),
        ("POST", "/jobs/999/cancel"),
        ("GET", "/jobs/999/rewards"),
        ("GET", "/jobs/999/rewards.png"),
    ]:
        response = api.client.request(method, path)
        assert response.status_code == 404, path
        assert_error_shape(response.json(), "not_found")
    for path in ["/jobs/0", "/jobs/99999999999", "/jobs/abc"]:
        assert api.client.get(path).status_code == 422


def test_cancel_a_queued_job_then_again_is_409(api: Api) -> None:
    job_id = api.client.post("/train", json={}).json()["id"]
    response = api.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = api.client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert_error_shape(again.json(), "conflict")


def test_cancel_a_running_job_asks_its_worker(api: Api) -> None:
    api.client.post("/train", json={"episodes": 10})
    job_id = run_job_partly(api, 2)
    response = api.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True


def test_progress_and_rewards_while_the_job_runs(api: Api) -> None:
    api.client.post("/train", json={"episodes": 10})
    job_id = run_job_partly(api, 4, evaluate_after=(1, 3))
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "running" and job["started_at"] is not None and job["attempts"] == 1
    assert job["progress"] == {
        "episodes_done": 4,
        "episodes_total": 10,
        "env_steps": 800,
        "last_return": -700.0,
        "best_eval_return": -297.0,
    }
    rewards = api.client.get(f"/jobs/{job_id}/rewards").json()
    assert rewards["job_id"] == job_id and rewards["status"] == "running"
    assert [e["episode"] for e in rewards["episodes"]] == [0, 1, 2, 3]
    assert rewards["episodes"][2] == {
        "episode": 2,
        "episode_return": -800.0,
        "avg_return_10": -900.0,
        "env_steps": 600,
        "wall_time": 1.5,
    }
    assert rewards["evaluations"] == [
        {"episode": 1, "env_steps": 400, "mean_return": -299.0, "std_return": 12.5, "wall_time": 1.0},
        {"episode": 3, "env_steps": 800, "mean_return": -297.0, "std_return": 12.5, "wall_time": 2.0},
    ]


def test_rewards_as_csv_by_query_or_accept_header(api: Api) -> None:
    api.client.post("/train", json={"episodes": 10})
    job_id = run_job_partly(api, 3, evaluate_after=(1,))
    by_query = api.client.get(f"/jobs/{job_id}/rewards", params={"format": "csv"})
    by_accept = api.client.get(f"/jobs/{job_id}/rewards", headers={"Accept": "text/csv"})
    for response in (by_query, by_accept):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert by_query.text == by_accept.text
    rows = list(csv.DictReader(io.StringIO(by_query.text)))
    assert [r["episode"] for r in rows] == ["0", "1", "2"]
    assert float(rows[1]["episode_return"]) == -900.0 and float(rows[1]["eval_mean_return"]) == -299.0
    assert rows[0]["eval_mean_return"] == "" and rows[2]["env_steps"] == "600"
    # ?format=json wins over the Accept header.
    forced = api.client.get(f"/jobs/{job_id}/rewards", params={"format": "json"}, headers={"Accept": "text/csv"})
    assert forced.headers["content-type"] == "application/json"
    assert api.client.get(f"/jobs/{job_id}/rewards", params={"format": "xml"}).status_code == 422


def test_rewards_png_is_a_learning_curve_image(api: Api) -> None:
    empty_id = api.client.post("/train", json={}).json()["id"]
    api.client.post("/train", json={"episodes": 10})
    response = api.client.get(f"/jobs/{empty_id}/rewards.png")  # no episodes yet: still an image
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG\r\n\x1a\n")
    api.client.post(f"/jobs/{empty_id}/cancel")
    job_id = run_job_partly(api, 5, evaluate_after=(2, 4))
    response = api.client.get(f"/jobs/{job_id}/rewards.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n") and len(response.content) > 5000


def test_succeeded_job_names_its_policy(api: Api) -> None:
    api.client.post("/train", json={"episodes": 1})
    job_id = run_job_partly(api, 1)
    with api.client.app.state.database.sessions() as session:  # type: ignore[attr-defined]
        complete_job(session, job_id, worker_id="test-worker", weights=make_policy_bytes(3))
    job = api.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["finished_at"] is not None
    policy = api.client.get(f"/policies/{job['policy_id']}").json()
    assert policy["source_job_id"] == job_id


def test_train_and_cancel_need_the_api_key_when_set(make_api: ApiFactory) -> None:
    api = make_api(api_key="admin-key")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "admin-key"},
        {"Authorization": "Basic admin-key"},
    ):
        response = api.client.post("/train", json={}, headers=headers)
        assert response.status_code == 401, headers
        assert_error_shape(response.json(), "unauthorized")
        assert "admin-key" not in response.text
    # 401 comes before validating the body, so an anonymous caller learns nothing about it.
    assert api.client.post("/train", json={"episodes": -1}).status_code == 401
    response = api.client.post("/train", json={}, headers=AUTH)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert api.client.post(f"/jobs/{job_id}/cancel").status_code == 401
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=AUTH).status_code == 200
    # Reading stays open.
    assert api.client.get(f"/jobs/{job_id}").status_code == 200
    assert api.client.get("/jobs").status_code == 200
