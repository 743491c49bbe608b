"""Compositing properties (hypothesis) and behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.generate.composite import BLENDINGS, CompositeParams, CompositeRequest, composite, composite_sample
from core.labels.overlay import Placement
from core.labels.recombine import RegionLibrary
from core.labels.regions import class_components
from core.store import DatasetStore


def _scene(seed=0, size=64):
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint8)
    labels[40:, :] = 11  # a table along the bottom
    source = np.zeros((size, size), np.uint8)
    source[10:30, 12:28] = 8
    source_image = np.full((size, size, 3), (250, 20, 20), np.uint8)
    objects = class_components(source, 8, image=source_image)
    return background, labels, objects


PARAMS = st.builds(
    CompositeParams,
    placement=st.builds(Placement, mode=st.just("random"), max_translate=st.floats(0, 0.8), scale=st.just((0.6, 1.3)),
                        max_rotate=st.floats(0, 90), flip=st.booleans(),
                        protected=st.sampled_from([(), (11,)]), layer=st.sampled_from(["top", "under"])),
    objects=st.just((1, 3)), max_truncation=st.floats(0, 1), max_overlap=st.floats(0, 1),
    blending=st.sampled_from(BLENDINGS), blend_size=st.integers(1, 6), distractors=st.integers(0, 2),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(params=PARAMS, seed=st.integers(0, 10_000))
def test_labels_preserved_protection_and_determinism(params, seed):
    background, labels, objects = _scene()
    sources = [("src", background, labels)]
    result = composite(background, labels, objects, params, np.random.default_rng(seed), distractor_sources=sources)
    assert set(np.unique(result.label_map).tolist()) <= {0, 8, 11}
    if 11 in params.placement.protected:
        assert np.array_equal(result.label_map == 11, labels == 11)
    if params.placement.layer == "under":
        assert np.all(result.label_map[labels == 11] == 11)
    assert result.image.shape == background.shape and result.image.dtype == np.uint8
    again = composite(background, labels, objects, params, np.random.default_rng(seed), distractor_sources=sources)
    assert np.array_equal(again.image, result.image) and np.array_equal(again.label_map, result.label_map)


def test_later_objects_occlude_earlier_ones():
    background = np.zeros((40, 40, 3), np.uint8)
    first = np.zeros((40, 40), np.uint8)
    first[5:30, 5:30] = 8
    second = np.zeros((40, 40), np.uint8)
    second[10:20, 10:20] = 15
    objects_a = class_components(first, 8, image=np.full((40, 40, 3), 200, np.uint8))
    objects_b = class_components(second, 15, image=np.full((40, 40, 3), 90, np.uint8))
    params = CompositeParams(placement=Placement(mode="keep"), objects=(1, 1), max_overlap=1.0, blending="none")
    step1 = composite(background, None, objects_a, params, np.random.default_rng(0))
    step2 = composite(step1.image, step1.label_map, objects_b, params, np.random.default_rng(0))
    assert (step2.label_map[10:20, 10:20] == 15).all() and step2.label_map[25, 25] == 8
    assert (step2.image[12, 12] == 90).all()


@pytest.mark.parametrize("blending", ["gaussian", "box", "motion"])
def test_blending_changes_only_pixels_near_the_pasted_border(blending):
    import cv2

    background, labels, objects = _scene(3)
    keep = Placement(mode="keep")
    hard = composite(background, labels, objects, CompositeParams(placement=keep, objects=(1, 1), blending="none"),
                     np.random.default_rng(1))  # fmt: skip
    params = CompositeParams(placement=keep, objects=(1, 1), blending=blending, blend_size=3)
    soft = composite(background, labels, objects, params, np.random.default_rng(1))
    assert np.array_equal(soft.label_map, hard.label_map)  # blending never changes labels
    pasted = (hard.label_map == 8).astype(np.uint8)
    border = cv2.morphologyEx(pasted, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    near = cv2.dilate(border.astype(np.uint8), np.ones((2 * params.reach() + 3,) * 2, np.uint8)) > 0
    changed = np.any(soft.image != hard.image, axis=2)
    assert changed.any() and not changed[~near].any()


def test_poisson_blends_into_the_background_colours():
    background, labels, objects = _scene(4)
    keep = Placement(mode="keep")
    hard = composite(background, labels, objects, CompositeParams(placement=keep, objects=(1, 1), blending="none"),
                     np.random.default_rng(1))  # fmt: skip
    poisson = composite(background, labels, objects, CompositeParams(placement=keep, objects=(1, 1), blending="poisson"),
                        np.random.default_rng(1))  # fmt: skip
    assert poisson.steps[0]["blending"] == "poisson"
    inside = hard.label_map == 8
    assert np.abs(poisson.image[inside].astype(int) - hard.image[inside]).mean() > 5  # colours adapted inside the mask


def test_truncation_and_overlap_limits_skip_impossible_placements():
    background, labels, objects = _scene()
    corner = Placement(mode="random", max_translate=1.0, scale=(3.0, 3.0))
    params = CompositeParams(placement=corner, objects=(3, 3), max_truncation=0.0, max_overlap=0.0, attempts=5)
    result = composite(background, labels, objects, params, np.random.default_rng(0))
    assert any("skipped" in step for step in result.steps)


def test_distractors_keep_labels_and_errors_are_clear():
    background, labels, objects = _scene()
    params = CompositeParams(placement=Placement(mode="random"), objects=(1, 1), distractors=2)
    result = composite(
        background, labels, objects, params, np.random.default_rng(2), distractor_sources=[("s", background, labels)]
    )
    distractors = [s for s in result.steps if s.get("distractor")]
    assert len(distractors) == 2
    with pytest.raises(InvalidInput, match="at least one object"):
        composite(background, labels, [], params, np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="blending must be one of"):
        CompositeParams(blending="smear")


def test_dataset_composites_are_deterministic_and_recorded():
    dataset = DatasetStore("assets/samples")
    library = RegionLibrary(dataset)
    request = CompositeRequest(("cat",), 2, 9, CompositeParams(objects=(1, 1), blending="gaussian"))
    a = composite_sample(library, request, 1)
    b = composite_sample(RegionLibrary(dataset), request, 1)
    assert np.array_equal(a.result.image, b.result.image) and a.record == b.record
    assert a.record["mode"] == "composite" and a.record["steps"][0]["region"]["sample"] == "chelsea"
