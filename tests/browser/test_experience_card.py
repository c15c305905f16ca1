"""The models card's recording facts in headless Chromium against the real service: sessions driven over HTTP while
the model records with exploration show up as a rate, stored transitions and episodes, the explore share and the
dropped count; the export link downloads a Minari archive that minari.load_dataset reads. Keeps a screenshot in
test-artifacts/recording.png."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import minari
import pytest

from tests.app.servers import REPO
from tests.browser.chromium import POLL_MS
from tests.browser.service_page import service_page
from tests.browser.test_models_dashboard import _seed

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SCREENSHOT = REPO / "test-artifacts" / "recording.png"


def _drive_episodes(client: httpx.Client, first: int, count: int, steps: int = 10) -> None:
    for session in range(first, first + count):
        for step in range(steps + 1):
            body: dict[str, object] = {"observation": [1.0, 0.0, step / 10], "session": f"s{session}"}
            if step:
                body["reward"] = -1.0
            if step == steps:
                body["truncated"] = True
            assert client.post("/act", json=body).status_code == 200


@pytest.mark.slow
def test_recording_figures_and_the_export_link(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(tmp_path / "data")
    with service_page(
        browser, tmp_path / "data", tmp_path / "service.log", accept_downloads=True, EXPERIENCE_FLUSH_SECONDS="0.2"
    ) as view:
        page, client = view.page, view.client
        page.wait_for_function("document.getElementById('model-select').value === 'pendulum'", polling=POLL_MS)
        page.locator("#recording-state").get_by_text("off").wait_for()
        assert page.locator("#export-minari").get_attribute("aria-disabled") == "true"

        body = {"record": True, "explore": {"noise": "gaussian", "sigma": 0.2, "percent": 50}}
        assert client.put("/models/pendulum/experience", json=body).status_code == 200
        page.locator("#recording-state").get_by_text("on, keeping the newest 1,000,000 transitions").wait_for()
        page.locator("#recording-explore").get_by_text("50% of sessions, sigma 0.2").wait_for()

        _drive_episodes(client, 0, 6)
        page.locator("#recording-stored").get_by_text("60 transitions, 6 episodes ended").wait_for()
        # A poll that saw the transitions arrive shows a rate above zero, then it falls back to 0 when idle.
        _drive_episodes(client, 6, 6)
        page.wait_for_function("Number(document.getElementById('recording-rate').textContent) > 0", polling=POLL_MS)
        page.locator("#recording-stored").get_by_text("120 transitions, 12 episodes ended").wait_for()
        page.locator("#recording-explore").get_by_text("of 12 ended episodes").wait_for()
        assert page.locator("#recording-dropped").inner_text() == "0"

        with page.expect_download() as download_info:
            page.locator("#export-minari").click()
        archive = tmp_path / "recorded.tar.gz"
        download_info.value.save_as(archive)
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(tmp_path / "datasets", filter="data")
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
        dataset = minari.load_dataset("ddpg-service/pendulum/recorded-v0")
        assert dataset.total_episodes == 12 and dataset.total_steps == 120
        assert page.locator("#export-parquet").get_attribute("href") == (
            "/models/pendulum/experience/dataset?format=parquet"
        )

        # Another model has recorded nothing: its links are disabled.
        page.get_by_label("Show model", exact=True).select_option("car")
        page.locator("#recording-stored").get_by_text("0 transitions, 0 episodes ended").wait_for()
        assert page.locator("#export-parquet").get_attribute("aria-disabled") == "true"
        page.get_by_label("Show model", exact=True).select_option("pendulum")
        page.locator("#recording-stored").get_by_text("120 transitions").wait_for()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.locator("#models").screenshot(path=str(SCREENSHOT))
        assert view.script_errors == []
