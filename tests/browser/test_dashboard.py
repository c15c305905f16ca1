"""The dashboard end to end in headless Chromium: the real service (API + embedded trainer worker), driven only
through the page. Start a job from the form (answering the API-key prompt), watch its curve grow, cancel a
second job, wait for success, promote the result, see it become the default. Keeps a screenshot in
test-artifacts/dashboard.png.

Uses the system Chromium through Playwright for Python (tests/browser/chromium.py): without them this test fails with
the reason, it never passes silently.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.app.factories import free_port
from tests.app.servers import REPO, running, server_env, wait_until_ready
from tests.browser.chromium import POLL_MS, STEP_DEADLINE_MS, new_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser

API_KEY = "dashboard-test-key"
EPISODES = 15
SCREENSHOT = REPO / "test-artifacts" / "dashboard.png"
# Bounds on waiting (milliseconds), not timing assertions: training 15 episodes takes ~15-30 s here.
TRAINING_DEADLINE_MS = 180_000

POINTS_JS = "(index) => Chart.getChart(document.getElementById('curve')).data.datasets[index].data.length"
# The options and placeholders wider than their box (less its padding, and a select's arrow): text shown cut.
CUT_TEXT_JS = """() => {
  const context = document.createElement("canvas").getContext("2d");
  const cut = [];
  for (const box of document.querySelectorAll("select, input[placeholder]")) {
    if (!box.offsetParent) continue;
    const style = getComputedStyle(box);
    context.font = style.font;
    const arrow = box.tagName === "SELECT" ? 20 : 0;
    const room = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - arrow;
    const texts = box.tagName === "SELECT" ? [...box.options].map((o) => o.text) : [box.placeholder];
    for (const text of texts) if (context.measureText(text).width > room) cut.push(`${box.id}: ${text}`);
  }
  return cut;
}"""


def cut_texts(page: Any) -> list[str]:
    """The form texts a user sees cut at this viewport."""
    return list(page.evaluate(CUT_TEXT_JS))


@contextlib.contextmanager
def service(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "service.log"
    env = server_env(
        tmp_path / "data",
        PORT=str(port),
        HOST="127.0.0.1",
        EMBEDDED_WORKER="true",
        BOOTSTRAP_JOB="false",
        API_KEY=API_KEY,
    )
    with running([sys.executable, "-m", "app"], env, log_path) as process:
        wait_until_ready(base_url, process, log_path, path="/jobs")
        try:
            yield base_url
        except BaseException:
            sys.stderr.write(f"service log:\n{log_path.read_text()[-4000:]}\n")
            raise


def job_row(page: Any, job_id: int) -> Any:
    return page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')


@pytest.mark.slow
def test_train_watch_cancel_and_promote_from_the_dashboard(browser: Browser, tmp_path: Path) -> None:
    with service(tmp_path) as base_url, new_page(browser, viewport={"width": 1280, "height": 1400}) as page:
        # Script errors fail the test; so do error responses other than the expected ones (the first
        # POST /train before the key is known; /readyz while no policy is loaded yet).
        script_errors: list[str] = []
        page.on("pageerror", lambda e: script_errors.append(str(e)))
        error_responses: set[tuple[int, str]] = set()
        page.on(
            "response",
            lambda r: error_responses.add((r.status, r.url.removeprefix(base_url))) if r.status >= 400 else None,
        )
        page.goto(base_url)
        assert page.title() == "DDPG policy service"
        page.get_by_text("No jobs yet.").wait_for()
        page.locator('#model-filter option[value="pendulum"]').wait_for(state="attached")
        assert cut_texts(page) == []

        # Start a job from the form; the server has an API key, so the page asks for it once.
        page.get_by_label("Preset", exact=True).select_option("default")
        page.get_by_label("Episodes", exact=True).fill(str(EPISODES))
        page.get_by_label("Seed", exact=True).fill("0")
        page.get_by_label("Hidden size", exact=True).fill("64")
        page.get_by_label("Exploration noise", exact=True).select_option("ou")
        page.get_by_label("Promote when done", exact=True).select_option("never")
        page.get_by_role("button", name="Start training").click()
        page.get_by_role("dialog").wait_for()
        page.get_by_role("textbox", name="API key").fill(API_KEY)
        page.get_by_role("button", name="Use key").click()
        page.get_by_text("Job #1 queued.").wait_for()
        # The job names its model and environment, and so does the learning curve's heading.
        job_row(page, 1).locator('td[data-model="pendulum"]').get_by_text("Pendulum-v1").wait_for()
        page.locator("#curve-job").get_by_text("job #1 · pendulum (Pendulum-v1)").wait_for()
        jobs = httpx.get(f"{base_url}/jobs").json()["items"]
        assert [j["id"] for j in jobs] == [1]
        assert jobs[0]["config"] == {
            "preset": "default",
            "episodes": EPISODES,
            "seed": 0,
            "hidden_size": 64,
            "noise": "ou",
        }
        assert jobs[0]["promote"] == "never"

        # The curve grows while the job trains (points arrive over server-sent events).
        page.wait_for_function(f"({POINTS_JS})(0) >= 1", timeout=TRAINING_DEADLINE_MS, polling=POLL_MS)
        first_count = page.evaluate(POINTS_JS, 0)
        page.wait_for_function(f"({POINTS_JS})(0) > {first_count}", timeout=TRAINING_DEADLINE_MS, polling=POLL_MS)
        assert first_count < EPISODES

        # A second job queues behind the first; cancel it from the page (the key is remembered: no prompt).
        page.get_by_label("Episodes", exact=True).fill("5")
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Job #2 queued.").wait_for()
        job_row(page, 2).get_by_role("button", name="Cancel").click()
        page.locator('#jobs-body tr[data-job-id="2"][data-status="cancelled"]').wait_for()
        assert not page.get_by_role("dialog").is_visible()

        # Back to the first job's curve: replayed from the start, then followed to the end.
        job_row(page, 1).get_by_role("button", name="Curve").click()
        page.locator('#jobs-body tr[data-job-id="1"][data-status="succeeded"]').wait_for(timeout=TRAINING_DEADLINE_MS)
        page.wait_for_function(f"({POINTS_JS})(0) === {EPISODES}", polling=POLL_MS)
        assert page.evaluate(POINTS_JS, 1) == EPISODES  # the 10-episode average
        assert page.evaluate(POINTS_JS, 2) >= 1  # evaluations
        page.get_by_text("job succeeded").wait_for()

        # Promote the job's policy from its row; the page then shows it as the default.
        policy_id = httpx.get(f"{base_url}/jobs/1").json()["policy_id"]
        assert isinstance(policy_id, int)
        job_row(page, 1).get_by_role("button", name=f"Promote #{policy_id}").click()
        page.get_by_text(f"Policy #{policy_id} is now the default.").wait_for()
        page.wait_for_function(
            f"document.getElementById('default-id').textContent === '#{policy_id}'",
            timeout=STEP_DEADLINE_MS,
            polling=POLL_MS,
        )
        assert httpx.get(f"{base_url}/readyz").json()["policy_id"] == policy_id
        page.locator(f'#policies-body tr[data-policy-id="{policy_id}"]').get_by_text("default").wait_for()
        page.get_by_text(f"ready · serving policy {policy_id}").wait_for()
        # Its rollout GIF loads (rendered by the server on first request).
        page.wait_for_function("document.getElementById('rollout').naturalWidth > 0", polling=POLL_MS)
        score = page.locator("#default-score").inner_text()
        assert float(score) < 0  # a Pendulum return, not the placeholder

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert script_errors == []
        assert error_responses <= {(401, "/train"), (503, "/readyz")}, error_responses
        assert (401, "/train") in error_responses  # the key prompt really was answered
