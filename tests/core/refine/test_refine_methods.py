from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from core.refine.densecrf import DenseCRFParams, check_probability, densecrf_refine
from core.refine.grabcut import GrabCutParams, fast_grabcut, opencv_grabcut, to_color_space
from core.refine.refiner import METHODS, BoxRefiner, RefineSettings, as_rgb
from core.types import Box
from tests.core.refine.synthetic import ellipse_scene, iou

FLOORS = {"auto": 0.95, "grabcut-fast": 0.95, "grabcut": 0.95, "grabcut+crf": 0.93, "densecrf": 0.75}


@pytest.mark.parametrize("method", sorted(FLOORS))
def test_each_classical_method_recovers_a_synthetic_object(method):
    image, truth, box = ellipse_scene()
    mask = BoxRefiner().refine(image, box, RefineSettings(method))
    assert mask.shape == truth.shape and mask.dtype == bool
    assert not (mask & ~box.mask(*truth.shape)).any()  # never outside the box
    assert iou(mask, truth) >= FLOORS[method]


def test_fast_grabcut_works_at_full_resolution_and_in_rgb():
    image, truth, box = ellipse_scene(seed=3)
    for params in (GrabCutParams(working_size=0), GrabCutParams(color_space="rgb"), GrabCutParams(connectivity=8)):
        mask = fast_grabcut(to_color_space(image, params.color_space), box, params)
        assert iou(mask, truth) >= 0.95


def test_large_images_are_worked_small_and_finished_at_full_resolution():
    image, truth, box = ellipse_scene(1200, 1600, seed=1)
    mask = fast_grabcut(to_color_space(image, "lab"), box)
    assert iou(mask, truth) >= 0.97
    # the full-resolution band step matters: plain upsampling is measurably worse at the boundary
    plain = fast_grabcut(to_color_space(image, "lab"), box, GrabCutParams(band=0))
    assert iou(mask, truth) >= iou(plain, truth)


def test_a_box_covering_the_whole_image_gets_background_samples():
    image, truth, _ = ellipse_scene()
    whole = Box(0, 0, image.shape[1], image.shape[0], 1)
    for method in ("grabcut", "grabcut-fast"):
        mask = BoxRefiner().refine(image, whole, RefineSettings(method))
        assert iou(mask, truth) >= 0.8, method


def test_boxes_partly_outside_are_clipped_and_fully_outside_refused():
    image, truth, box = ellipse_scene()
    refiner = BoxRefiner()
    shifted = Box(box.x0 - 500, box.y0, box.x1, box.y1, 1)
    mask = refiner.refine(image, shifted)
    assert mask.shape == truth.shape and iou(mask, truth) >= 0.9
    with pytest.raises(InvalidInput, match="outside the 160x120 image"):
        refiner.refine(image, Box(1000, 1000, 1010, 1010, 1))


@pytest.mark.parametrize("method", ["grabcut", "grabcut-fast", "densecrf", "grabcut+crf"])
def test_tiny_boxes_and_tiny_images_give_an_answer_not_a_crash(method):
    settings = RefineSettings(method)
    image, _, _ = ellipse_scene()
    tiny = BoxRefiner().refine(image, Box(10, 10, 12, 12, 1), settings)
    assert tiny.sum() <= 4
    one_pixel = np.full((1, 1, 3), 128, np.uint8)
    assert BoxRefiner().refine(one_pixel, Box(0, 0, 1, 1, 1), settings).shape == (1, 1)
    flat = np.full((40, 40, 3), 90, np.uint8)  # a single colour: nothing to separate
    assert BoxRefiner().refine(flat, Box(5, 5, 35, 35, 1), settings).shape == (40, 40)


def test_greyscale_and_rgba_images_are_accepted_other_arrays_refused():
    image, truth, box = ellipse_scene()
    grey = image.mean(axis=2).astype(np.uint8)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert as_rgb(grey).shape == image.shape and np.array_equal(as_rgb(rgba), image)
    assert iou(BoxRefiner().refine(rgba, box), truth) >= 0.95
    assert BoxRefiner().refine(grey, box).shape == truth.shape
    with pytest.raises(InvalidInput, match="uint8"):
        as_rgb(image.astype(np.float32))
    with pytest.raises(InvalidInput, match="H x W"):
        as_rgb(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InvalidInput, match="empty"):
        as_rgb(np.zeros((0, 4, 3), np.uint8))


def test_soft_masks_with_nan_or_out_of_range_values_are_refused():
    image, truth, box = ellipse_scene()
    prob = truth.astype(np.float32)
    assert check_probability(prob, truth.shape).dtype == np.float32
    bad = prob.copy()
    bad[0, 0], bad[0, 1] = np.nan, np.inf
    with pytest.raises(InvalidInput, match="2 NaN or infinite"):
        densecrf_refine(image, bad, box)
    with pytest.raises(InvalidInput, match=r"probabilities must be in \[0, 1\]"):
        densecrf_refine(image, prob * 2, box)
    with pytest.raises(InvalidInput, match="expected"):
        densecrf_refine(image, prob[:10], box)
    refined = densecrf_refine(image, np.clip(prob * 0.8 + 0.1, 0, 1), box)
    assert iou(refined, truth) >= 0.9


def test_settings_are_validated_and_recorded():
    with pytest.raises(InvalidInput, match="unknown refinement method 'magic'"):
        RefineSettings("magic")
    with pytest.raises(InvalidInput, match="working_size"):
        GrabCutParams(working_size=5)
    with pytest.raises(InvalidInput, match="box_confidence"):
        DenseCRFParams(box_confidence=1.5)
    record = RefineSettings("auto").record()
    assert record["resolved_method"] == "grabcut-fast" and record["grabcut"]["working_size"] == 160
    assert set(METHODS) >= {"auto", "grabcut", "grabcut-fast", "densecrf", "grabcut+crf", "sam", "sam+crf"}


def test_results_are_cached_per_image_box_and_settings():
    image, _, box = ellipse_scene()
    refiner = BoxRefiner()
    first = refiner.refine(image, box)
    calls = []
    refiner._run = lambda *a: calls.append(a) or first  # type: ignore[method-assign]
    assert np.array_equal(refiner.refine(image.copy(), box), first)  # same content, same key
    assert calls == []
    refiner.refine(image, box, RefineSettings("grabcut"))
    assert len(calls) == 1


def test_opencv_grabcut_never_shows_an_assertion():
    flat = np.zeros((30, 30, 3), np.uint8)
    mask = opencv_grabcut(flat, Box(0, 0, 30, 30, 1))
    assert mask.shape == (30, 30)
