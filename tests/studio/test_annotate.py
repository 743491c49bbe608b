from __future__ import annotations

import os

import numpy as np
import pytest

from core.errors import InvalidInput
from core.io.images import load_image
from core.types import Box
from studio.app import StudioConfig, build_app
from studio.session_store import SessionStore
from studio.tabs.annotate import ERASE, IGNORE, brush_index, stroke_from_editor


@pytest.fixture
def controller(samples_copy):
    return build_app(StudioConfig.for_data(samples_copy)).annotate


def test_annotator_boxes_are_clipped_and_bad_ones_dropped_with_a_reason(controller):
    value = {"boxes": [
        {"xmin": 10, "ymin": 20, "xmax": 110.4, "ymax": 90, "label": "cat"},
        {"xmin": -50, "ymin": 5, "xmax": 30, "ymax": 40, "label": "dog"},
        {"xmin": 900, "ymin": 900, "xmax": 950, "ymax": 950, "label": "cat"},
        {"xmin": 5, "ymin": 5, "xmax": 40, "ymax": 40, "label": "unicorn"},
        {"xmin": 5, "ymin": 5, "xmax": 5.5, "ymax": 40, "label": "cat"},
    ]}  # fmt: skip
    session = controller.session("ed", "chelsea")
    boxes, problems = controller.boxes_from_annotator(value, "person", session)
    assert boxes == [Box(10, 20, 111, 90, 8), Box(0, 5, 30, 40, 12)]
    assert len(problems) == 2 and "outside the 451x300 image" in problems[0] and "unicorn" in problems[1]


def test_session_per_browser_session_and_annotator_value(controller):
    a = controller.session("tab-a", "chelsea")
    assert controller.session("tab-a", "chelsea") is a
    assert controller.session("tab-b", "chelsea") is not a
    value = controller.annotator_value(a, 0.5)
    assert load_image(value["image"]).shape == (300, 451, 3)
    assert value["boxes"][0]["label"] == "cat" and value["boxes"][0]["xmax"] == a.entries[0].box.x1
    assert controller.annotator_value(a, 0.5)["image"] == value["image"]  # same state: the same file, not rewritten
    assert controller.annotator_value(a, 0.7)["image"] != value["image"]
    with pytest.raises(InvalidInput, match="no sample 'nope'"):
        controller.session("tab-a", "nope")


def test_compare_returns_overlays_disagreement_and_iou(controller):
    session = controller.session("ed", "chelsea")
    gallery, table = controller.compare(session, ["grabcut-fast", "grabcut"])
    assert len(gallery) == 3 and "disagreement" in gallery[2][1]
    rows = table.value["data"]
    assert rows[0][0] == "grabcut-fast" and float(rows[0][1]) == 1.0 and 0.5 < float(rows[0][2]) <= 1.0
    with pytest.raises(InvalidInput, match="two or three"):
        controller.compare(session, ["grabcut"])


def test_methods_without_weights_are_marked(controller):
    labels = dict((value, label) for label, value in controller.method_choices())
    assert labels["sam"] == "sam (weights missing)" and labels["auto"] == "auto"


def test_brush_choices_and_strokes_from_the_editor(controller):
    classes = controller.classes
    assert brush_index(classes, ERASE) == 0 and brush_index(classes, IGNORE) == 255 and brush_index(classes, "cat") == 8
    layer = np.zeros((150, 225, 4), np.uint8)
    layer[10:20, 10:20, 3] = 255
    stroke = stroke_from_editor({"background": None, "layers": [layer], "composite": None}, (300, 451))
    assert stroke.shape == (300, 451) and stroke.sum() > 300 and stroke[30, 30]
    assert not stroke_from_editor(None, (4, 4)).any()


def test_session_store_keeps_unsaved_work_and_frees_closed_sessions():
    store = SessionStore(per_session=2, keep=lambda v: v == "dirty")
    store.put("s", "a", "dirty")
    store.put("s", "b", "clean")
    store.put("s", "c", "clean")
    assert store.peek("s", "a") == "dirty" and store.peek("s", "b") is None
    assert store.get("s", "c", lambda: "new") == "clean"
    store.drop("s")
    assert store.sessions() == []


def test_parameter_controls_reach_the_settings():
    from studio.tabs.annotate import settings_from_controls

    settings = settings_from_controls("grabcut+crf", {"iterations": 3.0, "working_size": 240.0, "center_prior": 1.5,
                                                      "crf_iterations": 7.0, "bilateral_srgb": 20, "opencv_iterations": 9})  # fmt: skip
    assert (
        settings.grabcut.iterations == 3
        and settings.grabcut.working_size == 240
        and settings.grabcut.center_prior == 1.5
    )
    assert settings.crf.iterations == 7 and settings.crf.bilateral_srgb == 20 and settings.opencv_iterations == 9
    assert settings_from_controls("auto", {}) == settings_from_controls("auto", {"working_size": 160})
    with pytest.raises(InvalidInput, match="working_size"):
        settings_from_controls("auto", {"working_size": 8})


def test_box_picker_lists_every_box_with_its_state(controller):
    session = controller.session("ed", "chelsea")
    assert controller.box_choices(session) == [("#1 cat (0, 0)-(405, 300) · saved pixels", 1)]
    session.refine([1])
    assert controller.box_choices(session)[0][0].endswith("· grabcut-fast")


def test_rendered_images_are_written_once_and_never_rewritten(tmp_path):
    from PIL import Image

    from studio import gradio_fixes

    image = Image.new("RGB", (64, 48), (10, 200, 30))
    first = gradio_fixes.save_pil_to_cache_once(image, str(tmp_path))
    inode = os.stat(first).st_ino
    again = gradio_fixes.save_pil_to_cache_once(image, str(tmp_path))
    assert again == first and os.stat(again).st_ino == inode  # same file, not rewritten
    assert Image.open(first).size == (64, 48)


def test_concurrent_sessions_on_one_sample_each_get_their_own_result(controller):
    import threading

    from core.types import Box

    errors, results = [], {}

    def edit(editor: str, box: Box):
        try:
            session = controller.session(editor, "astronaut")
            with controller.lock(editor, "astronaut"):
                session.set_boxes([*(e.box for e in session.entries), box])
                value = controller.annotator_value(session, 0.5)
                controller.persist(editor, "astronaut", session)
            results[editor] = (session, value)
        except Exception as exc:  # noqa: BLE001 - any failure fails the test below
            errors.append(exc)

    boxes = {f"ed{i}": Box(20 + 40 * i, 30, 120 + 40 * i, 160, 12) for i in range(6)}
    threads = [threading.Thread(target=edit, args=item) for item in boxes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 6
    for editor, (session, value) in results.items():
        assert [e.box for e in session.entries][-1] == boxes[editor]  # its own box, nobody else's
        assert len(value["boxes"]) == 2 and os.path.isfile(value["image"])
    assert len({value["image"] for _, value in results.values()}) == 6


def test_brush_corrections_re_cut_the_box_under_them(controller):
    from studio.tabs.annotate import MAX_STROKE_POINTS, add_corrections, strokes_from_painted

    session = controller.session("ed", "chelsea")
    session.refine()
    cat = controller.classes.index_of("cat")
    box = session.entries[0].box
    before = session.label_map.copy()
    painted = np.zeros(session.shape, bool)
    cy, cx = (box.y0 + box.y1) // 2, (box.x0 + box.x1) // 2
    painted[cy - 12 : cy + 12, cx - 30 : cx + 30] = True  # a "not object" stroke across the middle of the cat
    assert (before[painted] == cat).mean() > 0.9
    add_corrections(session, painted, False, None)
    assert not (session.label_map[painted] == cat).any() and len(session.strokes_of(1)) == 1
    assert "not object stroke on #1" in session.history[-1]
    session.undo()
    assert np.array_equal(session.label_map, before)
    outside = np.zeros(session.shape, bool)
    outside[100:120, box.x1 + 5 : box.x1 + 30] = True  # right of the cat's box (405 of 451 px wide)
    with pytest.raises(InvalidInput, match="outside box #1"):
        add_corrections(session, outside, True, 1)
    big = np.ones((400, 400), bool)
    strokes = strokes_from_painted(big, True)
    assert len(strokes) == 1 and len(strokes[0].points) <= MAX_STROKE_POINTS and strokes[0].radius >= 1
    empty = controller.session("ed2", "astronaut")
    empty.set_boxes([])
    with pytest.raises(InvalidInput, match="over a box"):
        add_corrections(empty, painted, False, None)


def test_method_parameters_reach_the_settings():
    from studio.tabs.annotate import settings_from_controls

    loose = settings_from_controls("grabcut-fast", {"tight_prior": False, "working_size": 200.0, "iterations": 4.0})
    assert loose.grabcut.tight_prior is False and loose.grabcut.working_size == 200 and loose.grabcut.iterations == 4
    assert settings_from_controls("auto", {}).grabcut.tight_prior is True
