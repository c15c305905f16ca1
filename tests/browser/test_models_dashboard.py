"""The dashboard's models card in headless Chromium against the real service: pick a model, see its policies and
aliases, start a canary from the form, watch its live returns arrive from sessions driven over HTTP, roll it back,
and see why it ended. Keeps a screenshot in test-artifacts/models.png."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from store.db import create_db_engine, default_database_url, make_session_factory, migrate
from store.policies import register_policy
from tests.app.factories import free_port, make_policy_bytes
from tests.app.servers import REPO, running, server_env, wait_until_ready
from tests.browser.test_dashboard import CHROMIUM, CHROMIUM_ARGS, STEP_DEADLINE_MS, _playwright

SCREENSHOT = REPO / "test-artifacts" / "models.png"


def _seed(data_dir: Path) -> tuple[int, int]:
    url = default_database_url(data_dir)
    migrate(url)
    engine = create_db_engine(url)
    try:
        with make_session_factory(engine)() as session:
            champion = register_policy(session, weights=make_policy_bytes(1), promote="always").id
            challenger = register_policy(session, weights=make_policy_bytes(2), promote="never").id
            session.commit()
    finally:
        engine.dispose()
    return champion, challenger


@pytest.mark.slow
def test_pick_a_model_run_a_canary_and_roll_it_back(tmp_path: Path) -> None:
    sync_playwright = _playwright()
    champion, challenger = _seed(tmp_path / "data")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "service.log"
    env = server_env(
        tmp_path / "data",
        PORT=str(port),
        EMBEDDED_WORKER="false",
        BOOTSTRAP_JOB="false",
        LIVE_STATS_FLUSH_SECONDS="0.2",
    )
    with (
        running([sys.executable, "-m", "app"], env, log_path) as process,
        sync_playwright() as playwright,
        httpx.Client(base_url=base_url) as client,
    ):
        wait_until_ready(base_url, process, log_path)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1800})
            page.set_default_timeout(STEP_DEADLINE_MS)
            script_errors: list[str] = []
            page.on("pageerror", lambda e: script_errors.append(str(e)))
            page.goto(base_url)
            page.wait_for_function("document.getElementById('model-select').value === 'pendulum'")
            page.locator("#model-champion").get_by_text(f"#{champion}").wait_for()
            page.locator(f'#model-policies-body tr[data-policy-id="{challenger}"]').wait_for()

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
                ".reduce((sum, row) => sum + Number(row.children[2].textContent), 0) === 12"
            )
            page.locator('#rollout-live-body tr[data-role="champion"]').get_by_text("-30.0").first.wait_for()

            page.get_by_role("button", name="Roll back").click()
            page.get_by_text("Rolled back: new sessions get the champion.").wait_for()
            page.locator('#rollout-history li[data-status="rolled_back"]').get_by_text(
                "rolled back by request"
            ).wait_for()
            assert page.locator("#rollout-status").inner_text() == "No rollout."
            assert not page.get_by_role("button", name="Roll back").is_visible()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert script_errors == []
        finally:
            browser.close()
