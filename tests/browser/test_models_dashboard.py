"""The dashboard's models card in headless Chromium against the real service: pick a model, see its policies and
aliases, start a canary from the form, watch its live returns arrive from sessions driven over HTTP, roll it back,
and see why it ended. Every policy names its model and environment, and the tables filter by model. Keeps a
screenshot in test-artifacts/models.png."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from models.random_actor import random_actor_bytes
from store.db import create_db_engine, default_database_url, make_session_factory, migrate
from store.policies import register_policy
from store.registry import create_model
from tests.app.factories import make_policy_bytes
from tests.app.servers import REPO
from tests.browser.chromium import POLL_MS
from tests.browser.service_page import service_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SCREENSHOT = REPO / "test-artifacts" / "models.png"
CAR = "MountainCarContinuous-v0"


def _seed(data_dir: Path) -> tuple[int, int, int]:
    """Two Pendulum policies of the default model (its champion and a challenger) and the champion of `car`."""
    url = default_database_url(data_dir)
    migrate(url)
    engine = create_db_engine(url)
    try:
        with make_session_factory(engine)() as session:
            champion = register_policy(session, weights=make_policy_bytes(1), promote="always").id
            challenger = register_policy(session, weights=make_policy_bytes(2), promote="never").id
            spaces = {
                "obs_dim": 2,
                "act_dim": 1,
                "observation_low": [None, None],
                "observation_high": [None, None],
                "action_low": [-1.0],
                "action_high": [1.0],
            }
            car = create_model(session, name="car", env_id=CAR, spaces=spaces)
            car_bytes = random_actor_bytes(3, obs_dim=2, act_dim=1, action_bound=1.0, env_id=CAR, eval_mean_return=90.0)
            car_champion = register_policy(session, weights=car_bytes, promote="always", model_id=car.id).id
            session.commit()
    finally:
        engine.dispose()
    return champion, challenger, car_champion


@pytest.mark.slow
def test_pick_a_model_run_a_canary_and_roll_it_back(browser: Browser, tmp_path: Path) -> None:
    champion, challenger, car_champion = _seed(tmp_path / "data")
    with service_page(browser, tmp_path / "data", tmp_path / "service.log", LIVE_STATS_FLUSH_SECONDS="0.2") as view:
        page, client = view.page, view.client
        page.wait_for_function("document.getElementById('model-select').value === 'pendulum'", polling=POLL_MS)
        page.locator("#model-champion").get_by_text(f"#{champion}").wait_for()
        page.locator(f'#model-policies-body tr[data-policy-id="{challenger}"]').wait_for()

        # Every policy names its model and environment; each model's champion is marked, never offered again.
        def policy_row(policy_id: int) -> Any:
            return page.locator(f'#policies-body tr[data-policy-id="{policy_id}"]')

        policy_row(car_champion).locator('td[data-model="car"]').get_by_text(CAR).wait_for()
        assert policy_row(car_champion).get_by_text("champion", exact=True).is_visible()
        assert policy_row(challenger).locator("td").nth(1).inner_text() == "pendulum Pendulum-v1"
        assert policy_row(champion).get_by_text("default", exact=True).is_visible()
        assert page.locator("#default-model").inner_text() == "pendulum (Pendulum-v1)"
        # The filter shows one model's policies only, then all again.
        page.get_by_label("Jobs and policies of", exact=True).select_option("car")
        policy_row(challenger).wait_for(state="detached")
        assert page.locator("#policies-body tr[data-policy-id]").count() == 1
        page.get_by_label("Jobs and policies of", exact=True).select_option("")
        policy_row(challenger).wait_for()

        # A canary of the other policy, from the form.
        page.get_by_label("Challenger", exact=True).select_option(str(challenger))
        page.get_by_label("Rollout mode", exact=True).select_option("canary")
        page.get_by_label("Percent of traffic", exact=True).fill("50")
        page.get_by_label("Guard: min live episodes", exact=True).fill("")
        page.get_by_role("button", name="Start rollout").click()
        page.get_by_text(f"Rollout of #{challenger} started.").wait_for()
        page.locator("#rollout-status").get_by_text("canary at 50%").wait_for()
        assert client.get("/models/pendulum").json()["aliases"] == {"champion": champion, "challenger": challenger}

        # Sessions with rewards: their finished episodes appear as live figures.
        for session in range(12):
            for step in range(3):
                body = {
                    "observation": [1.0, 0.0, 0.0],
                    "session": f"s{session}",
                    "reward": -10.0,
                    "done": step == 2,
                }
                assert client.post("/act", json=body).status_code == 200
        page.wait_for_function(
            "[...document.querySelectorAll('#rollout-live-body tr')]"
            ".reduce((sum, row) => sum + Number(row.children[2].textContent), 0) === 12",
            polling=POLL_MS,
        )
        page.locator('#rollout-live-body tr[data-role="champion"]').get_by_text("-30.0").first.wait_for()

        page.get_by_role("button", name="Roll back").click()
        page.get_by_text("Rolled back: new sessions get the champion.").wait_for()
        page.locator('#rollout-history li[data-status="rolled_back"]').get_by_text("rolled back by request").wait_for()
        assert page.locator("#rollout-status").inner_text() == "No rollout."
        assert not page.get_by_role("button", name="Roll back").is_visible()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert view.script_errors == []
