"""Annotating in a real browser: draw a box, refine, brush, compare, save, check the file on disk."""

from __future__ import annotations

import numpy as np
import pytest

from core.store import DatasetStore
from tests.browser import CHROMIUM, chromium_page, running_studio

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]


def _status(page) -> str:
    return page.locator("#annotate-status").inner_text()


def _wait_status(page, text: str, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "(t) => document.querySelector('#annotate-status').innerText.includes(t)", arg=text, timeout=timeout
    )


def _drag(page, locator, start, end):
    box = locator.bounding_box()
    x0, y0 = box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1]
    x1, y1 = box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=10)
    page.mouse.up()


def test_draw_refine_brush_compare_and_save(samples_copy, tmp_path):
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1100) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Annotate").click()
        page.locator("#annotate-sample input").click()
        page.get_by_role("option", name="grace_hopper").click()
        _wait_status(page, "grace_hopper · 1 boxes, 0 refined")

        # draw a second box over the middle of the picture: it is refined at once
        page.locator('#annotator button[aria-label="Create box"]').click()
        _drag(page, page.locator("#annotator canvas").first, (0.4, 0.3), (0.6, 0.6))
        _wait_status(page, "2 boxes, 1 refined")  # the loaded box keeps its (absent) pixels until asked

        # refine all with OpenCV's GrabCut, then undo and redo it
        page.locator("#annotate-method input").click()
        page.get_by_role("option", name="grabcut", exact=True).click()
        page.locator("#refine-all").click()
        _wait_status(page, "refine all boxes (grabcut)")
        page.locator("#undo").click()
        _wait_status(page, "last step: edit boxes")
        page.locator("#redo").click()
        _wait_status(page, "refine all boxes (grabcut)")

        # refine just the drawn box with another method, picked in the box list
        page.locator("#annotate-method input").click()
        page.get_by_role("option", name="grabcut-fast", exact=True).click()
        page.locator("#refine-one").click()
        _wait_status(page, "refine #2 (grabcut-fast)")

        # a touch-up
        page.locator("#touch-fill_holes").click()
        page.wait_for_timeout(1500)

        # compare two methods on these boxes
        page.locator("#compare").get_by_text("Compare methods").click()
        page.locator("#compare-run").click()
        page.locator("#compare-gallery .thumbnail-item").nth(2).wait_for(timeout=60_000)
        assert "IoU" in page.locator("#compare-iou").inner_text()

        # save: the label map on disk holds the person class inside the drawn box
        page.locator("#save").click()
        page.wait_for_function("document.querySelector('#save-status').innerText.includes('Saved')", timeout=30_000)
        _wait_status(page, "· saved ·")

    dataset = DatasetStore(samples_copy)
    sample = dataset.get("grace_hopper")
    assert len(sample.boxes) == 2
    label = dataset.label_map("grace_hopper")
    drawn = sample.boxes[1] if sample.boxes[0].area > sample.boxes[1].area else sample.boxes[0]
    inside = label[drawn.y0 : drawn.y1, drawn.x0 : drawn.x1]
    assert (inside == 15).mean() > 0.5 and set(np.unique(label)) <= {0, 15, 255}


def test_a_not_object_stroke_removes_a_region_without_painting_pixels(samples_copy, tmp_path):
    """Refine the cat's box, press X twice (correction brush: object, then not object), paint one stroke
    across the cat, apply: the box is re-cut and the cat loses that region; no pixel was painted by hand."""
    cat = 8
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1300) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Annotate").click()
        page.locator("#annotate-sample input").click()
        page.get_by_role("option", name="chelsea").click()
        _wait_status(page, "chelsea · 1 boxes")
        page.locator("#refine-all").click()
        _wait_status(page, "refine all boxes (grabcut-fast)")
        page.locator("#save").click()
        _wait_status(page, "· saved ·")
        before = DatasetStore(samples_copy).label_map("chelsea")

        page.locator("body").click(position={"x": 5, "y": 5})  # keys go to the page, not a field
        page.keyboard.press("x")
        page.wait_for_function("(document.querySelector('#brush-value input') || {value: ''}).value.includes('object: re-cut')",
                               timeout=20_000)  # fmt: skip
        page.keyboard.press("x")
        page.wait_for_function("(document.querySelector('#brush-value input') || {value: ''}).value.includes('not object')",
                               timeout=20_000)  # fmt: skip
        canvas = page.locator("#brush-editor canvas").first
        canvas.wait_for(timeout=20_000)
        canvas.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)  # the editor's image is drawn
        _drag(page, canvas, (0.35, 0.5), (0.6, 0.5))
        page.locator("#apply-brush").click()
        _wait_status(page, "not object stroke on #1")
        assert "1 correction" in page.locator("#box-pick input").input_value()
        page.screenshot(path=str(tmp_path / "correction.png"), full_page=True)
        page.locator("#save").click()
        _wait_status(page, "· saved ·")

    after = DatasetStore(samples_copy).label_map("chelsea")
    removed = (before == cat) & (after != cat)
    assert removed.sum() > 200  # the stroke's region left the cat
    assert not ((before != cat) & (after == cat)).any() or ((before != cat) & (after == cat)).sum() < removed.sum()
