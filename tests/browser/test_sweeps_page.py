"""The sweep page in headless Chromium: a finished sweep's trials in a sortable table, their learning curves
overlaid, the best marked, and why its best was not promoted (the model's champion is better); on the dashboard,
its trials are marked as such and name their model. The sweep is written to the database as a runner and its
trials would (no Ray here). Keeps a screenshot in test-artifacts/sweeps.png."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.orm import Session

from store import jobs, sweeps
from store.db import create_db_engine, make_session_factory
from store.policies import register_policy
from store.sweep_trials import begin_trial, record_heldout
from tests.app.factories import free_port
from tests.app.servers import REPO, running, server_env, wait_until_ready
from tests.browser.chromium import POLL_MS, new_page
from tests.conftest import make_actor_bytes

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SCREENSHOT = REPO / "test-artifacts" / "sweeps.png"
# (seed, evaluation curve, held-out return): the second trial is the best on held-out seeds.
TRIALS = [(1, [-1200.0, -600.0, -300.0], -320.0), (2, [-1100.0, -400.0, -180.0], -170.0), (3, [-1300.0, -900.0], None)]
# The model's champion when the sweep ends evaluates better than any trial, so `if_better` keeps it.
CHAMPION_RETURN = -150.0


def _write_sweep(session: Session) -> tuple[int, int]:
    sweep = sweeps.enqueue_sweep(
        session, model="pendulum", base={"preset": "default", "episodes": 3}, space={"seed": {"choice": [1, 2, 3]}},
        trials=3, max_concurrent=2, search="grid", early_stop="asha", promote="if_better", max_failures=1,
        max_queued=10,
    )  # fmt: skip
    assert sweeps.claim_next_sweep(session, runner_id="runner", lease_seconds=60) is not None
    for seed, curve, heldout in TRIALS:
        worker = f"ray-{seed}"
        job_id = begin_trial(
            session, sweep_id=sweep.id, trial_id=f"t{seed}", params={"seed": seed},
            config={"preset": "default", "episodes": 3, "seed": seed}, worker_id=worker, node=f"node{seed % 2}abcdef",
            node_ip="127.0.0.1", lease_seconds=60,
        )  # fmt: skip
        assert job_id is not None
        for episode, value in enumerate(curve):
            jobs.record_episode(
                session, job_id, worker_id=worker, lease_seconds=60, episode=episode, episode_return=value,
                avg_return_10=value, env_steps=200 * (episode + 1), wall_time=float(episode),
            )  # fmt: skip
            jobs.record_evaluation(
                session, job_id, worker_id=worker, episode=episode, env_steps=200 * (episode + 1), mean_return=value,
                std_return=1.0, wall_time=float(episode),
            )  # fmt: skip
        if heldout is None:
            sweeps.end_trial(session, sweep.id, f"t{seed}", runner_id="runner", status="cancelled", reason="ASHA")
            continue
        record_heldout(session, job_id, worker_id=worker, mean_return=heldout, std_return=5.0)
        jobs.complete_job(session, job_id, worker_id=worker, weights=make_actor_bytes(curve[-1], seed=seed))
    champion = register_policy(session, weights=make_actor_bytes(CHAMPION_RETURN, seed=9), promote="always")
    session.commit()
    done = sweeps.finish_sweep(session, sweep.id, runner_id="runner", status="succeeded")
    return done.id, champion.id


@pytest.mark.slow
def test_a_sweeps_trials_sort_and_their_curves_overlay_with_the_best_marked(browser: Browser, tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    env = server_env(
        data, PORT=str(port), EMBEDDED_WORKER="false", EMBEDDED_SWEEP_RUNNER="false", BOOTSTRAP_JOB="false"
    )
    log_path = tmp_path / "service.log"
    with running([sys.executable, "-m", "app"], env, log_path) as process:
        wait_until_ready(base_url, process, log_path, path="/sweeps")
        engine = create_db_engine(f"sqlite:///{data / 'ddpg.sqlite3'}")
        with make_session_factory(engine)() as session:
            sweep_id, champion_id = _write_sweep(session)
        engine.dispose()
        with new_page(browser, viewport={"width": 1300, "height": 1000}) as page:
            page.goto(f"{base_url}/static/sweeps.html?sweep={sweep_id}")
            rows = page.locator("#trials-body tr")
            rows.nth(2).wait_for()
            assert rows.count() == 3
            best = page.locator("#trials-body tr.best")
            assert best.count() == 1 and "★ best" in best.inner_text()
            page.wait_for_function(
                "Chart.getChart(document.getElementById('curves'))?.data.datasets.length === 3", polling=POLL_MS
            )
            widths = page.evaluate(
                "Chart.getChart(document.getElementById('curves')).data.datasets.map((d) => d.borderWidth)"
            )
            assert sorted(widths) == [1, 1, 3]
            heldout = page.locator('#trials-table th[data-key="heldout_return"] button')
            heldout.click()  # ascending; the trial without a held-out score sorts last
            assert rows.nth(0).locator("td").nth(4).inner_text() == "-320.0"
            assert rows.nth(2).locator("td").nth(4).inner_text() == "\u2013"  # the page's "none" dash
            heldout.click()  # descending: the best first
            assert "★ best" in rows.nth(0).inner_text()
            assert page.locator('#trials-table th[data-key="heldout_return"]').get_attribute("aria-sort") == (
                "descending"
            )
            assert "#" in page.locator("#sweeps-body").inner_text()
            assert "pendulum" in page.locator("#sweeps-body").inner_text()  # the Model column
            promotion = page.locator("#sweep-promotion")
            promotion.get_by_text("was not promoted: under if_better it did not beat the champion").wait_for()
            assert f"-180.0 against champion #{champion_id}'s {CHAMPION_RETURN:.1f}" in promotion.inner_text()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The dashboard marks each trial's job as a trial of this sweep, and names its model.
            page.goto(base_url)
            trial = page.locator("#jobs-body tr[data-job-id]").first
            trial.get_by_role("link", name=f"sweep #{sweep_id} trial").wait_for()
            assert trial.locator('td[data-model="pendulum"]').count() == 1
            assert page.locator("#jobs-body a.badge.trial").count() == len(TRIALS)
