"""Render tab in headless Chromium: the mesh summary, a preview with its label and instance maps, a batch started
from the page that a second page (another browser context) sees finish."""

from __future__ import annotations

import pytest

from tests.browser import CHROMIUM, chromium_browser, running_studio
from tests.studio.test_train_browser import _wait_text
from tests.studio.test_train_tab import kill_workers

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]
pytest.importorskip("mitsuba", reason='Mitsuba 3 is not installed (pip install -e ".[render]")')


def test_render_tab_previews_and_renders_a_batch(tmp_path):
    from core.train.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", count=4, size=32, num_classes=3, seed=0)
    workspace = tmp_path / "ws"
    try:
        with running_studio("--data", str(data), "--workspace", str(workspace)) as url, chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            page.get_by_role("tab", name="Render").click()
            _wait_text(page, "#render-library", r"18 meshes in 6 classes")
            page.get_by_role("checkbox", name="Backgrounds from this dataset").check()
            _wait_text(page, "#render-library", r"4 unlabelled images \(255\)")
            page.locator("#render-size input").click()
            page.get_by_role("option", name="128", exact=True).click()
            page.locator("#render-preview").click()
            page.wait_for_function("() => !!document.querySelector('#render-preview-image img') && "
                                   "!!document.querySelector('#render-preview-labels img')", timeout=120_000)  # fmt: skip
            page.locator("#render-count input").fill("3")
            page.locator("#render-name textarea, #render-name input").first.fill("browser-batch")
            page.locator("#render-start").click()
            _wait_text(page, "#render-note", "started")
            other_context = browser.new_context()
            other = other_context.new_page()
            other.goto(url)
            other.get_by_role("tab", name="Render").click()
            _wait_text(other, "#render-status", r"samples", timeout=120_000)  # the load event shows the newest
            other.locator("#render-pick input").click()
            other.get_by_role("option", name="browser-batch", exact=False).click()
            _wait_text(other, "#render-status", r"finished · 3 of 3 samples", timeout=240_000)
            other.wait_for_function("() => document.querySelectorAll('#render-gallery img').length >= 3",
                                    timeout=30_000)  # fmt: skip
            other_context.close()
            _wait_text(page, "#render-status", r"finished · 3 of 3 samples", timeout=60_000)
    finally:
        for root in workspace.rglob("renders"):
            kill_workers(root)
