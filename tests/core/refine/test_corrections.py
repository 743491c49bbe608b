"""Correction strokes and clicks: hard constraints in every method, the rule for strokes outside the box,
the refiner's cache, and strokes in the annotation session (undo, drafts, re-refining)."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from core.refine.corrections import Stroke, check_strokes, rasterize_strokes
from core.refine.pool import PooledRefiner, WorkerPool
from core.refine.refiner import BoxRefiner, RefineSettings
from core.refine.session import AnnotationSession
from core.types import Box, ClassSet
from tests.core.refine.synthetic import ellipse_scene, iou
from tests.core.refine.test_sam_eval import sam_registry  # noqa: F401 - the tiny random SAM fixture

VOC = ClassSet.builtin("voc")
CLASSIC = ("grabcut-fast", "grabcut", "densecrf", "grabcut+crf")


def distractor_scene():
    """The ellipse scene with a green square inside the box (not part of the object): every method takes
    the square for object from the box alone."""
    image, truth, box = ellipse_scene(120, 160, seed=0)
    square = np.zeros(truth.shape, bool)
    square[50:70, 60:80] = True
    rng = np.random.default_rng(1)
    image = image.copy()
    image[square] = np.clip(np.array([60, 200, 60]) + rng.normal(0, 10, (int(square.sum()), 3)), 0, 255).astype(
        np.uint8
    )
    return image, truth & ~square, box, square


def _strokes_for(box: Box) -> list[Stroke]:
    """An object stroke in the box's background corner and a not-object click in the green square."""
    return [
        Stroke(((box.x0 + 2, box.y0 + 2), (box.x0 + 10, box.y0 + 4)), positive=True, radius=2),
        Stroke.click(70, 60, positive=False, radius=3),
    ]


# ---- strokes ------------------------------------------------------------------------------------


def test_strokes_rasterise_with_a_round_brush_and_the_later_stroke_wins():
    positive = Stroke(((10, 10), (20, 10)), positive=True, radius=2)
    negative = Stroke.click(20, 10, positive=False, radius=1)
    obj, not_obj = rasterize_strokes([positive, negative], 30, 40)
    assert obj.dtype == bool and obj.shape == (30, 40)
    assert obj[10, 10:19].all() and obj[8, 15] and not obj[7, 15]  # radius 2 around the segment
    assert not_obj[10, 20] and not obj[10, 20]  # the later negative click wins where they overlap
    assert not (obj & not_obj).any()
    obj2, _ = rasterize_strokes([negative, positive], 30, 40)
    assert obj2[10, 20]  # drawn the other way round, the object stroke wins
    with pytest.raises(InvalidInput, match="radius must be an integer 0..200"):
        Stroke.click(1, 1, radius=-1)
    with pytest.raises(InvalidInput, match="at least one"):
        Stroke(())
    assert Stroke.from_json(positive.to_json()) == positive


def test_an_object_stroke_leaving_the_box_is_refused_with_the_stroke_and_the_box_named():
    box = Box(10, 10, 50, 40)
    inside = Stroke.click(12, 12, radius=5)  # its brush overhangs the box edge: clipped, not refused
    leaving = Stroke(((20, 20), (60, 20)), positive=True)
    with pytest.raises(InvalidInput, match=r"stroke 2 \(object stroke of 2 points at \(20, 20\)\) reaches outside "
                                           r"box \(10, 10, 50, 40\) at \(60, 20\)"):  # fmt: skip
        check_strokes([inside, leaving], box, 100, 100)
    assert check_strokes([inside, Stroke(((60, 20), (90, 90)), positive=False)], box, 100, 100)  # not-object: fine
    with pytest.raises(InvalidInput, match=r"stroke 1 .* lies outside the 100x100 image"):
        check_strokes([Stroke.click(300, 300, positive=False)], box, 100, 100)


def test_strokes_outside_the_box_in_the_refiner():
    image, _, box, _ = distractor_scene()
    height, width = image.shape[:2]
    refiner = BoxRefiner()
    with pytest.raises(InvalidInput, match=r"stroke 1 .* reaches outside box \(28, 16, 133, 105\)"):
        refiner.refine(image, box, RefineSettings("grabcut-fast"), [Stroke.click(5, 5)])
    edge_click = Stroke.click(box.x0, box.y0 + 40, radius=6)  # the brush overhangs the box's left edge
    outside_negative = Stroke(((2, 2), (20, 2)), positive=False)  # wholly outside the box, inside the image
    mask = refiner.refine(image, box, RefineSettings("grabcut-fast"), [edge_click, outside_negative])
    assert not (mask & ~box.mask(height, width)).any()
    assert mask[box.y0 + 40, box.x0 : box.x0 + 6].all()  # the part of the click inside the box holds


@pytest.mark.parametrize("method", CLASSIC)
def test_hard_constraints_hold_for_every_classic_method(method):
    image, truth, box, square = distractor_scene()
    height, width = truth.shape
    refiner = BoxRefiner()
    before = refiner.refine(image, box, RefineSettings(method))
    assert before[square].mean() > 0.9  # the box alone takes the square for object
    strokes = _strokes_for(box)
    after = refiner.refine(image, box, RefineSettings(method), strokes)
    obj, not_obj = rasterize_strokes(strokes, height, width)
    assert obj.any() and not_obj.any()
    assert after[obj].all(), "pixels under an object stroke must be object"
    assert not after[not_obj].any(), "pixels under a not-object stroke must not be object"
    assert not (after & ~box.mask(height, width)).any()
    assert not np.array_equal(before, after)


def test_a_not_object_click_removes_the_whole_region_in_grabcut_fast():
    image, truth, box, square = distractor_scene()
    refiner = BoxRefiner()
    before = refiner.refine(image, box, RefineSettings("grabcut-fast"))
    after = refiner.refine(image, box, RefineSettings("grabcut-fast"), [Stroke.click(70, 60, positive=False)])
    click = Stroke.click(70, 60, positive=False).rasterize(*truth.shape)
    assert square.sum() > 10 * click.sum()
    assert after[square].mean() < 0.1  # the square goes, not just the clicked disk
    assert iou(after, truth) > iou(before, truth) + 0.05 and iou(after, truth) > 0.95


def test_the_result_cache_keys_include_the_strokes_and_replaying_gives_the_same_mask():
    image, _, box, _ = distractor_scene()
    strokes = _strokes_for(box)
    settings = RefineSettings("grabcut-fast")
    warm = BoxRefiner()
    plain = warm.refine(image, box, settings)
    one = warm.refine(image, box, settings, strokes[:1])
    two = warm.refine(image, box, settings, strokes)
    assert np.array_equal(warm.refine(image, box, settings), plain)  # not the corrected mask from the cache
    assert not np.array_equal(one, two)
    cold = BoxRefiner().refine(image, box, settings, strokes)  # all strokes at once, nothing cached
    assert np.array_equal(cold, two)


def test_label_map_takes_one_stroke_list_per_box():
    image, _, box, square = distractor_scene()
    other = Box(2, 2, 20, 20, 15)
    result = BoxRefiner().label_map(image, [box.with_label(8), other], RefineSettings("auto"),
                                    strokes=[[Stroke.click(70, 60, positive=False)], []])  # fmt: skip
    assert (result.label_map[square] != 8).mean() > 0.9
    assert result.settings["strokes"][0][0]["positive"] is False
    with pytest.raises(InvalidInput, match="2 boxes but 1 stroke lists"):
        BoxRefiner().label_map(image, [box, other], strokes=[[]])


def test_strokes_reach_the_worker_processes():
    image, _, box, _ = distractor_scene()
    strokes = _strokes_for(box)
    pooled = PooledRefiner(workers=1)
    pooled.pool = WorkerPool(1)
    try:
        for method in ("grabcut-fast", "densecrf"):
            here = BoxRefiner().refine(image, box, RefineSettings(method), strokes)
            there = pooled.refine(image, box, RefineSettings(method), strokes)
            assert np.array_equal(here, there), method
    finally:
        pooled.pool.reset()


def test_sam_takes_strokes_as_point_prompts_and_the_constraints_hold(sam_registry):  # noqa: F811
    image, truth, box, _ = distractor_scene()
    strokes = _strokes_for(box)
    predictor = sam_registry.load("sam-vit-base")
    plain = predictor.predict("k", image, box)
    prompted = predictor.predict("k", image, box, [(70, 60), (box.x0 + 2, box.y0 + 2)], [0, 1])
    assert prompted.shape == truth.shape and not np.array_equal(plain, prompted)  # the points reached the model
    with pytest.raises(InvalidInput, match="2 prompt points but 1 labels"):
        predictor.predict("k", image, box, [(1, 1), (2, 2)], [1])
    obj, not_obj = rasterize_strokes(strokes, *truth.shape)
    refiner = BoxRefiner(sam_registry)
    for method in ("sam", "sam+crf"):
        mask = refiner.refine(image, box, RefineSettings(method), strokes)
        assert mask[obj].all() and not mask[not_obj].any(), method


# ---- the annotation session ---------------------------------------------------------------------


def _session():
    image, truth, box, square = distractor_scene()
    session = AnnotationSession(image, VOC, boxes=[box.with_label(8)])
    session.refine([1], RefineSettings("grabcut-fast"))
    return session, truth, square


def test_a_correction_re_cuts_its_box_and_undo_restores_the_mask_exactly():
    session, truth, square = _session()
    before = session.label_map
    entry_before = session.entries[0]
    assert (before[square] == 8).mean() > 0.9
    after = session.add_correction(1, Stroke.click(70, 60), positive=False)
    assert (after[square] == 8).mean() < 0.1
    assert session.strokes_of(1) == (Stroke.click(70, 60, positive=False),)
    assert session.history[-1] == "not object click on #1 (grabcut-fast)"
    assert np.array_equal(session.undo(), before)
    assert session.entries[0] == entry_before and session.strokes_of(1) == ()
    assert np.array_equal(session.redo(), after)
    with pytest.raises(InvalidInput, match=r"box #1: stroke 2 .* reaches outside box"):
        session.add_correction(1, Stroke.click(1, 1))
    with pytest.raises(InvalidInput, match="no box #7"):
        session.add_correction(7, Stroke.click(70, 60))
    assert session.box_at(70, 60) == 1 and session.box_at(1, 1) is None


def test_strokes_survive_a_draft_round_trip():
    session, _, _ = _session()
    session.add_correction(1, Stroke(((40, 30), (44, 34)), positive=True, radius=2))
    session.add_correction(1, Stroke.click(70, 60, positive=False))
    draft = session.to_draft()
    fresh = AnnotationSession(session.image, VOC, boxes=[session.entries[0].box])
    fresh.restore_draft(draft)
    assert fresh.strokes_of(1) == session.strokes_of(1) and len(fresh.strokes_of(1)) == 2
    assert np.array_equal(fresh.label_map, session.label_map)
    fresh.undo()
    assert len(fresh.strokes_of(1)) == 1  # the undo stack kept each step's strokes


def test_re_refining_with_another_method_keeps_the_strokes_as_constraints():
    session, truth, _ = _session()
    stroke = Stroke.click(70, 60, positive=False, radius=4)
    session.add_correction(1, stroke)
    session.refine([1], RefineSettings("densecrf"))
    entry = session.entries[0]
    assert entry.method == "densecrf" and entry.strokes == (stroke,)
    footprint = stroke.rasterize(*truth.shape)
    assert not (session.label_map[footprint] == 8).any()
    session.add_correction(1, Stroke.click(60, 60, positive=True))  # re-cuts with the box's method: densecrf
    assert session.history[-1].endswith("(densecrf)") and len(session.strokes_of(1)) == 2


def test_moving_a_box_keeps_the_strokes_that_still_fit():
    session, _, _ = _session()
    session.add_correction(1, Stroke.click(100, 30, positive=True))
    session.add_correction(1, Stroke.click(70, 60, positive=False))
    box = session.entries[0].box
    session.set_boxes([Box(box.x0, box.y0, 90, box.y1, 8)])  # the object click at x=100 is outside now
    assert session.strokes_of(1) == (Stroke.click(70, 60, positive=False),)
    assert session.clear_corrections(1) is not None and session.strokes_of(1) == ()
