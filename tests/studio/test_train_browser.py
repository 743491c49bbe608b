"""The Train tab in headless Chromium: start a short run, watch the loss curve and the sample grid update, cancel,
resume to more steps; a second page opened meanwhile sees the same run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, chromium_browser, running_studio
from tests.studio.test_train_tab import kill_workers

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]
SHOTS = os.environ.get("SEGSTUDIO_TRAIN_SHOTS")  # a folder: screenshots are written there


def _wait_text(page, selector: str, pattern: str, timeout: int = 120_000) -> None:
    page.wait_for_function(
        "([s, p]) => { const el = document.querySelector(s); return !!el && new RegExp(p).test(el.innerText); }",
        arg=[selector, pattern], timeout=timeout,
    )  # fmt: skip


def _step(page) -> int:
    found = re.search(r"step (\d+) /", page.locator("#train-status").inner_text())
    return int(found.group(1)) if found else -1


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def _fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Tab")


def test_train_tab_runs_cancels_and_resumes_in_the_browser(tmp_path):
    from core.train.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", count=8, size=32, num_classes=3, seed=0)
    workspace = tmp_path / "ws"
    try:
        with running_studio("--data", str(data), "--workspace", str(workspace)) as url, chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            page.get_by_role("tab", name="Train").click()
            page.locator("#train-size input").click()
            page.get_by_role("option", name="16", exact=True).click()
            for elem_id, value in (("train-steps", "100000"), ("train-batch", "2"), ("train-width", "8"),
                                   ("train-sample-every", "4"), ("train-checkpoint-every", "10")):  # fmt: skip
                _fill(page, elem_id, value)
            name_box = page.locator("#train-name input, #train-name textarea").first
            name_box.fill("browser-run")
            page.locator("#train-start").click()
            _wait_text(page, "#train-note", "started")
            _wait_text(page, "#train-status", r"training · step ([4-9]|\d\d+) /")
            page.wait_for_function("() => !!document.querySelector('#train-grid img')", timeout=60_000)
            first_grid = page.locator("#train-grid img").get_attribute("src")
            page.wait_for_function("() => document.querySelectorAll('#train-plot canvas, #train-plot svg').length > 0",
                                   timeout=60_000)  # fmt: skip
            # the grid and the step move on while the page only watches
            seen = _step(page)
            _wait_text(page, "#train-status", r"step \d+ /")
            page.wait_for_function(
                "([s, n]) => { const m = /step (\\d+) \\//.exec(document.querySelector(s).innerText);"
                " return !!m && +m[1] >= n + 8; }", arg=["#train-status", seen], timeout=120_000,
            )  # fmt: skip
            page.wait_for_function("(old) => { const i = document.querySelector('#train-grid img');"
                                   " return !!i && i.getAttribute('src') !== old; }", arg=first_grid, timeout=60_000)  # fmt: skip
            assert "ETA" in page.locator("#train-status").inner_text()
            _shot(page, "train_running.png")

            # a second page (another browser context) sees the same run
            other = browser.new_context().new_page()
            other.goto(url)
            other.get_by_role("tab", name="Train").click()
            # the page's load event lists the runs and shows the newest: wait for it (slow on a busy machine)
            _wait_text(other, "#train-status", r"step \d+ /", timeout=120_000)
            other.locator("#train-run input").click()
            other.get_by_role("option", name=re.compile("browser-run")).click()
            _wait_text(other, "#train-status", "training")

            page.locator("#train-cancel").click()
            _wait_text(page, "#train-status", "cancelled", timeout=60_000)
            _wait_text(other, "#train-status", "cancelled", timeout=60_000)
            stopped_at = int(re.search(r"checkpoint at step (\d+)", page.locator("#train-status").inner_text()).group(1))
            assert stopped_at >= 8
            _shot(page, "train_cancelled.png")

            _fill(page, "train-more-steps", str(stopped_at + 6))
            page.locator("#train-resume").click()
            _wait_text(page, "#train-note", f"from step {stopped_at}")
            _wait_text(page, "#train-status", f"finished · step {stopped_at + 6} / {stopped_at + 6}")
            _shot(page, "train_finished.png")
    finally:
        for runs_dir in workspace.glob("datasets/*/train_runs"):
            kill_workers(runs_dir)
