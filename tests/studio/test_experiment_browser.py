"""Train tab, "Does synthetic data help?", in headless Chromium: start an experiment from the page, watch the run
count and the table fill in while the page only watches, a second page sees the same experiment and cancels it,
the first resumes it to the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, chromium_browser, running_studio
from tests.studio.test_train_browser import _fill, _wait_text
from tests.studio.test_train_tab import kill_workers

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]
SHOTS = os.environ.get("SEGSTUDIO_TRAIN_SHOTS")  # a folder: screenshots are written there


def _open_experiments(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("tab", name="Does synthetic data help?").click()


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def test_experiment_runs_in_the_background_and_two_pages_share_it(tmp_path):
    from core.train.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", count=12, size=24, num_classes=3, seed=0)
    workspace = tmp_path / "ws"
    try:
        with running_studio("--data", str(data), "--workspace", str(workspace)) as url, chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            _open_experiments(page, url)
            page.locator("#exp-size input").click()
            page.get_by_role("option", name="32", exact=True).click()
            for elem_id, value in (("exp-repeats", "2"), ("exp-steps", "30")):
                _fill(page, elem_id, value)
            page.get_by_role("button", name="More settings").click()
            _fill(page, "exp-width", "4")
            _fill(page, "exp-depth", "2")
            page.locator("#exp-split textarea, #exp-split input").first.fill("6,3,3")
            page.locator("#exp-ratios textarea, #exp-ratios input").first.fill("0,1")
            page.locator("#exp-name textarea, #exp-name input").first.fill("browser-exp")
            page.locator("#exp-start").click()
            _wait_text(page, "#exp-note", "started")
            _wait_text(page, "#exp-status", r"(running|starting)")
            # the table and the run count grow while the page only watches (2 repeats x 5 rows)
            _wait_text(page, "#exp-status", r"[1-9] of 10 runs finished", timeout=240_000)
            _wait_text(page, "#exp-table", r"real only\s+0\s+flip")
            page.wait_for_function("() => !!document.querySelector('#exp-miou-plot img')", timeout=60_000)
            _shot(page, "experiment_running.png")
            # a second page (another browser context) sees the same experiment and cancels it
            other_context = browser.new_context(viewport={"width": 1400, "height": 1200})
            other = other_context.new_page()
            _open_experiments(other, url)
            _wait_text(other, "#exp-status", r"runs finished", timeout=120_000)  # the load event shows the newest
            other.locator("#exp-pick input").click()
            other.get_by_role("option", name="browser-exp", exact=False).click()
            _wait_text(other, "#exp-status", r"runs finished")
            other.locator("#exp-cancel").click()
            _wait_text(other, "#exp-status", r"cancelled", timeout=120_000)
            _wait_text(page, "#exp-status", r"cancelled", timeout=60_000)  # the first page follows
            other_context.close()
            # the first page resumes it to the end
            page.locator("#exp-resume").click()
            _wait_text(page, "#exp-note", "continuing browser-exp")
            _wait_text(page, "#exp-status", r"finished · 10 of 10 runs finished", timeout=400_000)
            _wait_text(page, "#exp-table", r"recombined only\s+only\s+flip\s+2\s")
            _shot(page, "experiment_finished.png")
    finally:
        for root in workspace.rglob("experiments"):
            kill_workers(root)
