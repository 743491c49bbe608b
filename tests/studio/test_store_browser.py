"""The dataset store as a person meets it in the browser: a save is seen by every tab without a restart,
a box's class changes from the canvas, a refresh keeps unsaved edits, two people editing one sample get
the conflict choice."""

from __future__ import annotations

import numpy as np
import pytest

from core.store import DatasetStore
from tests.browser import CHROMIUM, chromium_browser, running_studio

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]
VIEWPORT = {"width": 1400, "height": 1100}


def _wait_text(page, selector: str, text: str, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text], timeout=timeout
    )


def _open(page, url: str, sample_id: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#annotate-sample input").click()
    page.get_by_role("option", name=sample_id, exact=True).click()
    _wait_text(page, "#annotate-status", f"{sample_id} ·")


def _draw(page, start, end) -> None:
    page.locator('#annotator button[aria-label="Create box"]').click()
    canvas = page.locator("#annotator canvas").first.bounding_box()
    page.mouse.move(canvas["x"] + canvas["width"] * start[0], canvas["y"] + canvas["height"] * start[1])
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] * end[0], canvas["y"] + canvas["height"] * end[1], steps=8)
    page.mouse.up()


def _options(page, selector: str) -> list[str]:
    page.locator(f"{selector} input").click()
    texts = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [t.replace("✓", "").strip() for t in texts]


def test_a_save_in_annotate_is_seen_by_generate_and_label_maps_without_restart(samples_copy, tmp_path):
    with running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url, chromium_browser() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        _open(page, url, "grace_hopper")
        page.get_by_role("tab", name="Generate").click()
        assert "grace_hopper" not in _options(page, "#gen-sample")  # no label map yet
        page.get_by_role("tab", name="Annotate").click()
        page.locator("#refine-all").click()
        _wait_text(page, "#annotate-status", "1 refined")
        page.locator("#save").click()
        _wait_text(page, "#save-status", "Saved")
        page.get_by_role("tab", name="Generate").click()
        page.wait_for_timeout(4000)  # the page asks the store every 3 s
        assert "grace_hopper" in _options(page, "#gen-sample")
        page.get_by_role("tab", name="Label maps").click()
        page.locator("#labels-class input").click()
        page.get_by_role("option", name="person", exact=True).click()
        _wait_text(page, "#labels-regions", "grace_hopper #1")


def test_class_change_from_the_canvas_and_from_the_box_list(samples_copy, tmp_path):
    with running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url, chromium_browser() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        _open(page, url, "grace_hopper")
        _draw(page, (0.4, 0.3), (0.6, 0.6))
        _wait_text(page, "#annotate-status", "2 boxes")
        assert page.locator("#box-pick input").input_value().startswith("#2 person")
        page.locator('#annotator button[aria-label="Drag boxes"]').click()
        canvas = page.locator("#annotator canvas").first.bounding_box()
        page.mouse.dblclick(canvas["x"] + canvas["width"] * 0.5, canvas["y"] + canvas["height"] * 0.45)
        label = page.locator(".modal-container input[aria-label=Label]")
        label.click()
        label.press("Control+a")
        label.type("cat")
        page.locator(".modal-container li[aria-label=cat]").click()
        page.get_by_role("button", name="OK").click()
        page.wait_for_function("document.querySelector('#box-pick input').value.startsWith('#2 cat')", timeout=30_000)
        # and back, from the box list
        page.locator("#box-class input").click()
        page.get_by_role("option", name="dog", exact=True).click()
        page.locator("#set-class").click()
        _wait_text(page, "#annotate-status", "class of #2 -> dog")
        page.locator("#save").click()
        _wait_text(page, "#save-status", "Saved")
    saved = DatasetStore(samples_copy).get("grace_hopper").boxes
    assert sorted(b.label for b in saved) == [12, 15]  # dog and the person


def test_refresh_mid_edit_restores_the_draft_and_leaving_warns(samples_copy, tmp_path):
    with running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url, chromium_browser() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        _open(page, url, "chelsea")
        _draw(page, (0.6, 0.1), (0.75, 0.4))
        _wait_text(page, "#annotate-status", "unsaved changes")
        page.reload()
        page.get_by_role("tab", name="Annotate").click()
        _wait_text(page, "#annotate-status", "chelsea · 2 boxes")
        _wait_text(page, "#annotate-notice", "Restored your unsaved edits")
        assert "unsaved changes" in page.locator("#annotate-status").inner_text()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.type), d.dismiss()))
        page.close(run_before_unload=True)
        context.pages[0].wait_for_timeout(1000) if context.pages else None
        assert dialogs == ["beforeunload"]
        other = context.new_page()  # the same browser a moment later: the draft is still there
        _open(other, url, "chelsea")
        _wait_text(other, "#annotate-status", "chelsea · 2 boxes")
    assert len(DatasetStore(samples_copy).get("chelsea").boxes) == 1  # nothing was saved meanwhile


def test_two_people_editing_one_sample_get_the_conflict_choice(samples_copy, tmp_path):
    with running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url, chromium_browser() as browser:
        alice = browser.new_context(viewport=VIEWPORT).new_page()
        bob = browser.new_context(viewport=VIEWPORT).new_page()
        _open(alice, url, "chelsea")
        _open(bob, url, "chelsea")
        _draw(alice, (0.3, 0.6), (0.45, 0.9))  # Alice has unsaved work (a clean page would follow Bob's save)
        _wait_text(alice, "#annotate-status", "unsaved changes")
        _draw(bob, (0.6, 0.1), (0.75, 0.4))
        _wait_text(bob, "#annotate-status", "2 boxes")
        bob.locator("#save").click()
        _wait_text(bob, "#save-status", "Saved")
        _wait_text(alice, "#annotate-notice", "saved elsewhere since you opened it")  # told before saving
        alice.locator("#save").click()
        _wait_text(alice, "#annotate-conflict-text", "changed by someone else")
        for button in ("#conflict-reload", "#conflict-overwrite", "#conflict-copy"):
            assert alice.locator(button).is_visible()
        alice.locator("#conflict-copy").click()
        _wait_text(alice, "#save-status", "chelsea_copy")
    store = DatasetStore(samples_copy)
    bobs, alices = store.get("chelsea").boxes, store.get("chelsea_copy").boxes
    assert len(bobs) == 2 and len(alices) == 2 and set(bobs) != set(alices)
    theirs, mine = store.label_map("chelsea"), store.label_map("chelsea_copy")
    assert not np.array_equal(theirs, mine)  # each kept their own cut
