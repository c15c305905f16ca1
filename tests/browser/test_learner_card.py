"""The models card's online learner in headless Chromium against the real service: a learner started over the API,
its process's publishes and progress written through the store as a learner process writes them, and live episodes
of each published policy, and transitions recorded after its cursor; the card shows its rates, update-to-data ratio
and lag, and the learning curve of its policies' live returns. Keeps a screenshot in test-artifacts/learner.png."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from store import learners
from store.db import create_db_engine, default_database_url, make_session_factory
from store.live_returns import ReturnSums, add_returns
from tests.app.factories import make_policy_bytes
from tests.app.servers import REPO
from tests.browser.chromium import POLL_MS
from tests.browser.service_page import service_page
from tests.browser.test_models_dashboard import _seed

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SCREENSHOT = REPO / "test-artifacts" / "learner.png"
WORKER = "learner-under-test"


def _publish_and_learn(data_dir: Path) -> list[int]:
    """What a learner process writes: two publishes, then progress a second and more later; and what live sessions
    write: episodes of each published policy (the second one better)."""
    engine = create_db_engine(default_database_url(data_dir))
    try:
        with make_session_factory(engine)() as session:
            learner = learners.claim_next_learner(session, worker_id=WORKER, lease_seconds=600)
            assert learner is not None
            published = []
            for step, seed in enumerate((11, 12), start=1):
                counters = learners.Counters(
                    transitions_consumed=1000 * step, updates=500 * step, cursor=0, pending=0, publishes=step
                )
                weights = make_policy_bytes(seed)
                published.append(
                    learners.publish_policy(
                        session, learner.id, worker_id=WORKER, weights=weights, checkpoint=b"", counters=counters
                    )
                )
            add_returns(
                session,
                {
                    (0, published[0]): ReturnSums(episodes=4, total=4 * -900.0, total_sq=4 * 900.0**2),
                    (0, published[1]): ReturnSums(episodes=5, total=5 * -300.0, total_sq=5 * 300.0**2),
                },
            )
            session.commit()
            # Rates are measured from a publish at least a second old: wait that long before the next progress.
            time.sleep(1.2)
            later = learners.Counters(transitions_consumed=3000, updates=1500, cursor=0, pending=0, publishes=2)
            learners.record_progress(session, learner.id, worker_id=WORKER, counters=later, lease_seconds=600)
            return published
    finally:
        engine.dispose()


@pytest.mark.slow
def test_the_learners_figures_and_its_live_learning_curve(browser: Browser, tmp_path: Path) -> None:
    _seed(tmp_path / "data")
    with service_page(
        browser,
        tmp_path / "data",
        tmp_path / "service.log",
        height=2000,
        EMBEDDED_LEARNER="false",
        EXPERIENCE_FLUSH_SECONDS="0.2",
    ) as view:
        page, client = view.page, view.client
        page.wait_for_function("document.getElementById('model-select').value === 'pendulum'", polling=POLL_MS)
        # No learner yet: the card says so and hides the figures.
        page.locator("#learner-none").wait_for()
        assert page.locator("#learner-block").is_hidden()

        assert client.put("/models/pendulum/learner", json={"publish_every": 500}).status_code == 202
        page.locator("#learner-state").get_by_text("queued").wait_for()
        assert page.locator("#learner-none").is_hidden()

        first, second = _publish_and_learn(tmp_path / "data")
        # A session records 25 transitions the learner has not read (the learner turned recording on); its
        # episode goes on, so no live return is added to the curve's.
        for step in range(26):
            body: dict[str, object] = {"observation": [1.0, 0.0, step / 10], "session": "late"}
            if step:
                body["reward"] = -1.0
            assert client.post("/act", json=body).status_code == 200
        learner = client.get("/models/pendulum/learner").json()
        # 2000 transitions and 1000 updates in the span since the second publish (1.2 s and a little more).
        assert 0 < learner["transitions_per_second"] < 2000 / 1.2
        assert learner["updates_per_second"] == pytest.approx(learner["transitions_per_second"] / 2)
        by_id = {p["policy_id"]: p for p in learner["policies"]}
        assert by_id[first]["live_mean_return"] == pytest.approx(-900.0) and by_id[first]["live_episodes"] == 4
        assert by_id[second]["live_mean_return"] == pytest.approx(-300.0)

        page.locator("#learner-state").get_by_text(f"running on {WORKER}").wait_for()
        page.locator("#learner-progress").get_by_text("3,000 transitions, 1,500 updates").wait_for()
        page.locator("#learner-published").get_by_text(f"2 policies, the last #{second}").wait_for()
        assert page.locator("#learner-utd").inner_text() == "0.50"
        # Unread: the 25 recorded after its cursor; unlearned: those and the 1,001 updates owed for what it read (one
        # per transition from the 500th, learning_starts, on: 2,501 for 3,000, of which 1,500 ran).
        page.locator("#learner-lag").get_by_text("25 transitions unread, 1,026 unlearned").wait_for()
        shown_rate = float(page.locator("#learner-updates-rate").inner_text())
        assert shown_rate == pytest.approx(learner["updates_per_second"], abs=0.06)
        assert float(page.locator("#learner-transitions-rate").inner_text()) > shown_rate
        page.locator("#learner-curve-summary").get_by_text("2 published policies with live episodes").wait_for()
        # The curve: one point per published policy, oldest first, at its live mean return.
        points = page.evaluate(
            "learnerState.chart.data.datasets[0].data.map((p) => [p.policy.policy_id, p.y, p.x >= 0])"
        )
        assert points == [[first, -900.0, True], [second, -300.0, True]]

        # Another model has no learner.
        page.get_by_label("Show model", exact=True).select_option("car")
        page.locator("#learner-none").wait_for()
        page.get_by_label("Show model", exact=True).select_option("pendulum")
        page.locator("#learner-block").wait_for()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.locator("#learner-heading").scroll_into_view_if_needed()
        page.locator("#models").screenshot(path=str(SCREENSHOT))
        assert view.script_errors == []
