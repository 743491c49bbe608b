from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from core.refine import touchup
from core.refine.labelmap import compose_label_map, paint_order
from core.refine.refiner import BoxRefiner, RefineSettings
from core.refine.session import AnnotationSession
from core.store import DatasetStore
from core.types import Box, ClassSet
from tests.core.refine.synthetic import ellipse_scene, iou

VOC = ClassSet.builtin("voc")


def _square(shape, x0, y0, x1, y1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_smaller_box_wins_by_default_and_rules_are_configurable():
    shape = (20, 20)
    big, small = Box(0, 0, 20, 20, 18), Box(5, 5, 10, 10, 15)
    masks = [_square(shape, 0, 0, 20, 20), _square(shape, 5, 5, 10, 10)]
    assert compose_label_map(shape, [big, small], masks)[7, 7] == 15
    assert compose_label_map(shape, [small, big], masks[::-1])[7, 7] == 15
    assert compose_label_map(shape, [big, small], masks, overlap="larger")[7, 7] == 18
    assert compose_label_map(shape, [small, big], masks[::-1], overlap="order")[7, 7] == 18
    with pytest.raises(InvalidInput, match="accepted: smaller, larger, order"):
        paint_order([big], "random")


def test_pixels_in_no_mask_are_background_and_the_ignore_band_sits_on_borders():
    shape = (20, 20)
    box = Box(4, 4, 16, 16, 8)
    label = compose_label_map(shape, [box], [_square(shape, 6, 6, 14, 14)], ignore_band=1)
    assert label[0, 0] == 0 and label[10, 10] == 8
    assert label[6, 10] == 255 and label[5, 10] == 255  # both sides of the border
    assert set(np.unique(label)) == {0, 8, 255}
    with pytest.raises(InvalidInput, match="2 boxes but 1 masks"):
        compose_label_map(shape, [box, box], [np.zeros(shape, bool)])


def test_label_map_from_several_boxes_of_several_classes():
    image, truth, box = ellipse_scene(160, 240, seed=2)
    second = Box(2, 2, 30, 30, 15)
    result = BoxRefiner().label_map(image, [box.with_label(8), second], RefineSettings("auto"))
    assert result.label_map.dtype == np.uint8 and result.label_map.shape == truth.shape
    assert iou(result.label_map == 8, truth) >= 0.95
    assert set(np.unique(result.label_map)) <= {0, 8, 15}
    assert len(result.seconds) == 2 and result.settings["resolved_method"] == "grabcut-fast"


# ---- touch-ups ---------------------------------------------------------------------------------


def test_fill_holes_and_remove_small_blobs():
    label = np.zeros((30, 30), np.uint8)
    label[5:25, 5:25] = 8
    label[12:15, 12:15] = 0  # a hole
    label[0:2, 28:30] = 15  # a speck
    filled = touchup.fill_holes(label)
    assert (filled[12:15, 12:15] == 8).all() and filled[0, 29] == 15
    cleaned = touchup.remove_small_blobs(filled, min_area=10)
    assert cleaned[0, 29] == 0 and (cleaned[5:25, 5:25] == 8).all()


def test_open_and_close_never_grow_into_other_classes():
    label = np.zeros((40, 40), np.uint8)
    label[10:30, 10:20] = 8
    label[10:30, 21:30] = 15  # a 1-px background gap between the two
    label[0:2, 0:2] = 8
    closed = touchup.close_regions(label, 5)
    assert closed[20, 20] in (0, 8, 15) and (closed[10:30, 21:30] == 15).all()
    opened = touchup.open_regions(label, 5)
    assert opened[0, 0] == 0 and opened[20, 15] == 8
    with pytest.raises(InvalidInput, match="kernel size"):
        touchup.open_regions(label, 0)


# ---- the editing session ------------------------------------------------------------------------


def _session(**kwargs):
    image, truth, box = ellipse_scene(seed=4)
    return AnnotationSession(image, VOC, [box.with_label(8)], **kwargs), truth


def test_session_refines_edits_undoes_and_redoes_without_limit():
    session, truth = _session()
    assert (session.label_map == 255).all() and not session.can_undo  # no saved map: every pixel unknown
    refined = session.refine()
    assert iou(refined == 8, truth) >= 0.95
    stroke = np.zeros(truth.shape, bool)
    stroke[0:5, 0:5] = True
    session.brush(stroke, 15)
    assert (session.label_map[0:5, 0:5] == 15).all()
    states = [session.label_map]
    for k in range(30):  # many small edits
        s = np.zeros(truth.shape, bool)
        s[100, k] = True
        states.append(session.brush(s, 15))
    for expected in reversed(states[:-1]):
        assert np.array_equal(session.undo(), expected)
    assert np.array_equal(session.undo(), refined)
    assert np.array_equal(session.undo(), np.full_like(refined, 255))
    with pytest.raises(InvalidInput, match="nothing to undo"):
        session.undo()
    session.redo()
    assert np.array_equal(session.label_map, refined)
    assert session.history == ["open", "refine all boxes (grabcut-fast)"]


def test_manual_edits_survive_re_refining_and_adding_boxes():
    session, truth = _session()
    session.refine()
    stroke = np.zeros(truth.shape, bool)
    stroke[0:4, 0:4] = True
    session.brush(stroke, 15)
    session.refine(settings=RefineSettings("grabcut"))
    assert (session.label_map[0:4, 0:4] == 15).all()
    session.set_boxes([*[e.box for e in session.entries], Box(120, 90, 150, 115, 12)])
    assert len(session.entries) == 2 and session.entries[1].refined
    assert (session.label_map[0:4, 0:4] == 15).all()
    session.clear_edits()
    assert session.label_map[0, 0] == 255  # unknown again, not background
    session.undo()
    assert session.label_map[0, 0] == 15


def test_a_new_edit_clears_the_redo_stack_and_unchanged_edits_push_nothing():
    session, _ = _session()
    session.refine()
    session.undo()
    assert session.can_redo
    session.touch_up("fill_holes")  # nothing to fill in an empty map: no new state
    assert session.can_redo
    session.refine()
    assert not session.can_redo


def test_session_refuses_bad_boxes_classes_and_operations():
    session, truth = _session()
    with pytest.raises(InvalidInput, match="class 0"):
        session.set_boxes([Box(0, 0, 10, 10, 0)])
    with pytest.raises(InvalidInput, match="unknown class index 40"):
        session.set_boxes([Box(0, 0, 10, 10, 40)])
    with pytest.raises(InvalidInput, match="no box #5"):
        session.refine([5])
    with pytest.raises(InvalidInput, match="unknown touch-up 'sharpen'"):
        session.touch_up("sharpen")
    with pytest.raises(InvalidInput, match="unknown class index 99"):
        session.brush(np.ones(truth.shape, bool), 99)
    with pytest.raises(InvalidInput, match="is 5x5 but the image"):
        AnnotationSession(np.zeros((10, 10, 3), np.uint8), VOC, base=np.zeros((5, 5), np.uint8))


def test_opening_keeps_the_loaded_map_until_a_box_is_refined(samples_copy):
    ds = DatasetStore(samples_copy)
    sample = ds.get("chelsea")
    image = ds.image("chelsea")
    loaded = ds.label_map("chelsea")
    session = AnnotationSession(image, ds.classes, sample.boxes, base=loaded)
    assert np.array_equal(session.label_map, loaded) and not session.dirty
    session.refine()
    assert session.dirty
    assert (session.label_map == 8).sum() > 0.3 * (loaded == 8).sum()


def test_save_writes_map_and_keeps_the_unchanged_boxes_file(samples_copy):
    ds = DatasetStore(samples_copy)
    sample = ds.get("grace_hopper")
    xml_before = (samples_copy / "Annotations" / "grace_hopper.xml").read_bytes()
    session = AnnotationSession(ds.image("grace_hopper"), ds.classes, sample.boxes, revision=ds.revision("grace_hopper"))
    session.refine()
    label_map, boxes = session.save_payload()
    result = ds.save("grace_hopper", label_map=label_map, boxes=boxes, base_revision=session.revision)
    session.mark_saved(result.revision)
    assert [p.name for p in result.written] == ["grace_hopper.png"] and result.kept == []  # a new map; same boxes
    assert (samples_copy / "Annotations" / "grace_hopper.xml").read_bytes() == xml_before
    assert not session.dirty
    on_disk = DatasetStore(samples_copy).label_map("grace_hopper")
    assert np.array_equal(on_disk, session.label_map) and (on_disk == 15).sum() > 10_000
    assert set(np.unique(on_disk)) == {15, 255}  # outside the person: unknown, never background
