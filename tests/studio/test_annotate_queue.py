"""The annotator's work queue in the tabs: Save and next, marks, progress, next box / method, the Dataset tab's
status filter (controllers only; the browser test is in test_queue_browser.py)."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from studio.app import StudioConfig, build_app
from studio.tabs.annotate import SHORTCUTS, SHORTCUTS_JS, shortcut_help
from studio.tabs.dataset import gallery_page, progress_markdown, status_filter_choices


@pytest.fixture
def demo(samples_copy):
    (samples_copy / "SegmentationClass" / "coffee.png").unlink()  # two done (astronaut, chelsea), two unlabelled
    return build_app(StudioConfig.for_data(samples_copy))


def test_save_and_next_opens_the_next_unlabelled_sample_then_says_none_is_left(demo):
    controller = demo.annotate
    session = controller.session("ed", "grace_hopper")
    session.refine()
    controller.persist("ed", "grace_hopper", session)
    assert controller.store.status("grace_hopper") == "draft"
    result, following = controller.save_and_next(session, "grace_hopper")
    assert result.changed and controller.store.status("grace_hopper") == "done"
    assert following == "coffee"  # after grace_hopper, wrapping round to the start
    session = controller.session("ed", "coffee")
    session.refine()
    result, following = controller.save_and_next(session, "coffee")
    assert following is None  # nothing unlabelled is left
    assert controller.store.status_counts()["done"] == 4
    assert controller.progress("coffee").startswith("**Progress: 4 / 4 done**")


def test_a_save_with_flagged_masks_needs_review_and_marks_save_pending_edits_first(demo, monkeypatch):
    controller = demo.annotate
    session = controller.session("ed", "grace_hopper")
    session.refine()
    monkeypatch.setattr(session, "flagged", lambda: [(1, "empty mask")])
    controller.save(session, "grace_hopper")
    assert controller.store.status("grace_hopper") == "needs_review"
    assert controller.store.status_mark("grace_hopper").note == "flagged: #1 empty mask"
    assert "this sample: **needs review** (flagged: #1 empty mask)" in controller.progress("grace_hopper")
    controller.mark(session, "grace_hopper", "done")  # nothing unsaved: just the mark
    assert controller.store.status("grace_hopper") == "done"

    other = controller.session("ed", "coffee")
    other.refine()
    assert other.dirty
    result = controller.mark(other, "coffee", "needs_review")  # the edits are saved, then marked
    assert result is not None and result.changed and not other.dirty
    assert controller.store.status("coffee") == "needs_review"
    assert controller.store.status_mark("coffee").note == "marked by the annotator"


def test_next_box_and_next_method_wrap_round(demo):
    controller = demo.annotate
    session = controller.session("ed", "chelsea")
    assert controller.next_box(session, None) == 1 and controller.next_box(session, 1) == 1
    session.set_boxes([*(e.box for e in session.entries), session.entries[0].box.with_label(8).clip(100, 100)])
    assert controller.next_box(session, 1) == 2 and controller.next_box(session, 2) == 1
    methods = [value for label, value in controller.method_choices() if label == value]
    assert controller.next_method(methods[-1]) == methods[0]
    assert controller.next_method("auto") == methods[1]
    assert "sam" not in methods  # models without weights are skipped


def test_dataset_tab_filters_by_status_and_shows_progress(demo):
    ctx = demo.studio_context
    items, ids, info, _ = gallery_page(ctx, [], 0, "unlabelled")
    assert ids == ["coffee", "grace_hopper"] and "2 of 4 samples · unlabelled" in info
    assert items[0][1] == "coffee · diningtable · ○ unlabelled"
    assert gallery_page(ctx, [], 0, "done")[1] == ["astronaut", "chelsea"]
    assert gallery_page(ctx, ["person"], 0, "unlabelled")[1] == ["grace_hopper"]  # with the class filter
    assert gallery_page(ctx, [], 0, "all")[1] == ["astronaut", "chelsea", "coffee", "grace_hopper"]
    ctx.store.set_status("coffee", "needs review")
    items, ids, _, _ = gallery_page(ctx, [], 0, "needs_review")
    assert ids == ["coffee"] and items[0][1].endswith("⚑ needs review")
    counts = ctx.store.status_counts()
    assert ("needs review (1)", "needs_review") in status_filter_choices(ctx, counts)
    assert progress_markdown(counts).startswith("**Progress: 2 / 4 done**")
    with pytest.raises(InvalidInput, match="unknown status"):
        gallery_page(ctx, [], 0, "finished")


def test_shortcuts_are_installed_and_listed():
    assert SHORTCUTS["ctrl+s"] == "save" and SHORTCUTS["ctrl+enter"] == "save-next"
    for key in ("c", "d", "e", " ", "delete"):  # the box annotator's own keys stay its own
        assert key not in SHORTCUTS
    assert "typing(event.target)" in SHORTCUTS_JS and '"n": "annotate-next-sample"' in SHORTCUTS_JS
    assert "<kbd>Ctrl+S</kbd> save" in shortcut_help() and "correction" not in shortcut_help()
    assert "<kbd>X</kbd> correction brush" in shortcut_help(correction=True)
