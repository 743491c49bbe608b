"""The annotator's work queue in a real browser: keyboard shortcuts move through the samples, save, and Save and
next opens the next unlabelled sample; the Dataset tab's status filter shows only the chosen status."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.store import DatasetStore
from tests.browser import CHROMIUM, chromium_page, running_studio

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]
SHOTS = os.environ.get("SEGSTUDIO_QUEUE_SHOTS")  # a folder: screenshots of both tabs are written there


def _wait_text(page, selector: str, text: str, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "([s, t]) => { const el = document.querySelector(s); return !!el && el.innerText.includes(t); }",
        arg=[selector, text], timeout=timeout,
    )  # fmt: skip


def _status(page, text: str) -> None:
    _wait_text(page, "#annotate-status", text)


def test_keyboard_moves_through_the_queue_and_the_dataset_filter_shows_one_status(samples_copy, tmp_path):
    (samples_copy / "SegmentationClass" / "coffee.png").unlink()  # unlabelled: coffee, grace_hopper
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1100) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Annotate").click()
        _wait_text(page, "#annotate-progress", "Progress: 2 / 4 done")
        assert "Ctrl+S" in page.locator("#annotate-shortcuts").inner_text()

        # next / previous sample with N and P
        page.locator("#annotate-progress").click()  # focus outside any field
        page.keyboard.press("n")
        _status(page, "astronaut ·")
        page.keyboard.press("n")
        _status(page, "chelsea ·")
        page.keyboard.press("p")
        _status(page, "astronaut ·")

        # single keys do nothing while typing in a field
        page.locator("#annotate-sample input").click()
        page.keyboard.type("n")
        page.wait_for_timeout(1500)
        assert "astronaut ·" in page.locator("#annotate-status").inner_text()
        page.keyboard.press("Escape")
        page.locator("#annotate-progress").click()

        # open coffee (unlabelled), refine, Ctrl+Enter: saved, and the next unlabelled sample opens
        page.locator("#annotate-sample input").click()
        page.get_by_role("option", name="coffee").click()
        _status(page, "coffee ·")
        _wait_text(page, "#annotate-progress", "this sample: unlabelled")
        page.locator("#refine-all").click()
        _status(page, "refine all boxes")
        page.keyboard.press("Control+Enter")
        _status(page, "grace_hopper ·")
        _wait_text(page, "#annotate-progress", "Progress: 3 / 4 done")
        _wait_text(page, "#annotate-notice", "Next unlabelled sample: grace_hopper")
        assert (samples_copy / "SegmentationClass" / "coffee.png").is_file()

        # M cycles the method; refine with it, then Ctrl+S saves
        page.keyboard.press("m")
        page.wait_for_function("document.querySelector('#annotate-method input').value === 'grabcut-fast'")
        page.locator("#refine-all").click()
        _status(page, "refine all boxes (grabcut-fast)")
        page.keyboard.press("Control+s")
        _wait_text(page, "#save-status", "Saved")
        _wait_text(page, "#annotate-progress", "Progress: 4 / 4 done")
        assert (samples_copy / "SegmentationClass" / "grace_hopper.png").is_file()

        # mark it for review
        page.locator("#mark-review").click()
        _wait_text(page, "#annotate-progress", "1 needs review")
        if SHOTS:
            page.wait_for_timeout(2000)  # the live refresh the mark set off settles
            page.screenshot(path=str(Path(SHOTS) / "queue_annotate.png"))

        # the Dataset tab: the status filter shows only the chosen status
        page.get_by_role("tab", name="Dataset").click()
        thumbs = page.locator("#sample-gallery .thumbnail-item")
        thumbs.first.wait_for(timeout=30_000)
        _wait_text(page, "#dataset-progress", "Progress: 3 / 4 done")
        page.locator("#status-filter").get_by_text("needs review (1)").click()
        page.wait_for_function("document.querySelectorAll('#sample-gallery .thumbnail-item').length === 1")
        assert "grace_hopper" in thumbs.first.inner_text() and "needs review" in thumbs.first.inner_text()
        assert "1 of 4 samples · needs review" in page.locator("#page-info").inner_text()
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "queue_dataset.png"))
        page.locator("#status-filter").get_by_text("done (3)").click()
        page.wait_for_function("document.querySelectorAll('#sample-gallery .thumbnail-item').length === 3")
        assert all("✓ done" in thumbs.nth(i).inner_text() for i in range(3))

    store = DatasetStore(samples_copy, cache_dir=None)
    assert store.label_map("grace_hopper") is not None
