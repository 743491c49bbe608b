"""Property tests of the label-map operations (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.errors import InvalidInput
from core.labels.overlay import Placement, band_map, overlay, reconstruct
from core.labels.regions import class_components, decompose

SHAPES = st.tuples(st.integers(8, 40), st.integers(8, 40))


@st.composite
def label_maps(draw, values=(0, 1, 2, 3, 255)):
    h, w = draw(SHAPES)
    return draw(arrays(np.uint8, (h, w), elements=st.sampled_from(values)))


@st.composite
def placements(draw):
    lo = draw(st.floats(0.3, 1.5))
    return Placement(
        mode=draw(st.sampled_from(["keep", "random"])), max_translate=draw(st.floats(0, 1)),
        scale=(lo, lo * draw(st.floats(1, 2))), max_rotate=draw(st.floats(0, 180)), flip=draw(st.booleans()),
        protected=tuple(draw(st.sets(st.sampled_from([0, 1, 2, 3]), max_size=2))),
        layer=draw(st.sampled_from(["top", "under"])), ignore_border=draw(st.integers(0, 3)),
    )  # fmt: skip


def _regions(source):
    out = []
    for _, (whole, components) in decompose(source, source_id="src").items():
        out += [whole, *components[:2]]
    return out


@settings(max_examples=120, deadline=None)
@given(source=label_maps(values=(0, 4, 5)), target=label_maps(), placement=placements(), seed=st.integers(0, 2**31))
def test_overlay_preserves_shape_values_protection_and_is_deterministic(source, target, placement, seed):
    regions = _regions(source)
    if not regions:
        return
    result = overlay(target, regions, placement, np.random.default_rng(seed))
    assert result.label_map.shape == target.shape and result.label_map.dtype == np.uint8
    allowed = set(np.unique(target).tolist()) | {r.class_index for r in regions} | {255}
    assert set(np.unique(result.label_map).tolist()) <= allowed
    protected = np.isin(target, placement.protected)
    assert np.array_equal(result.label_map[protected], target[protected])
    if placement.layer == "under":
        changed = result.label_map != target
        assert np.all(np.isin(target[changed], [0]) | (result.label_map[changed] == 255))
    again = overlay(target, regions, placement, np.random.default_rng(seed))
    assert np.array_equal(again.label_map, result.label_map) and again.steps == result.steps


@settings(max_examples=60, deadline=None)
@given(source=label_maps(values=(0, 4)), seed=st.integers(0, 1000))
def test_images_follow_the_labels(source, seed):
    h, w = source.shape
    src_image = np.zeros((h, w, 3), np.uint8)
    src_image[source == 4] = (250, 10, 10)
    target = np.zeros((h, w), np.uint8)
    target_image = np.full((h, w, 3), (10, 10, 250), np.uint8)
    regions = [r for r in decompose(source, image=src_image).get(4, (None, []))[1]]
    if not regions:
        return
    result = overlay(
        target, regions[:1], Placement(mode="keep"), np.random.default_rng(seed), target_image=target_image
    )
    pasted = result.label_map == 4
    assert np.array_equal(result.image[pasted], np.tile([250, 10, 10], (int(pasted.sum()), 1)))
    assert np.array_equal(result.image[~pasted], np.tile([10, 10, 250], (int((~pasted).sum()), 1)))


def test_keep_placement_puts_a_region_back_where_it_was():
    source = np.zeros((30, 40), np.uint8)
    source[5:15, 10:25] = 7
    (region,) = class_components(source, 7)
    result = overlay(np.zeros((30, 40), np.uint8), [region], Placement(mode="keep"), np.random.default_rng(0))
    assert np.array_equal(result.label_map == 7, source == 7)


def test_decompose_finds_classes_and_components_largest_first():
    label = np.zeros((20, 20), np.uint8)
    label[0:2, 0:2] = 3
    label[10:20, 10:20] = 3
    label[5, 5] = 255
    parts = decompose(label)
    assert set(parts) == {3}
    whole, components = parts[3]
    assert whole.area == 104 and [c.area for c in components] == [100, 4] and components[0].bbox == (10, 10, 20, 20)
    assert class_components(label, 3, min_area=10)[0].area == 100


def test_band_maps_fill_every_pixel_in_order():
    bands = band_map((10, 4), [(10, 0.4), (2, 0.3), (0, 0.3)])
    assert bands[:4].tolist() == [[10] * 4] * 4 and bands[4:7].min() == 2 and bands[7:].max() == 0
    result = reconstruct(bands, [], Placement(), np.random.default_rng(0))
    assert np.array_equal(result.label_map, bands)
    with pytest.raises(InvalidInput, match="shares"):
        band_map((4, 4), [(1, 0.0)])


def test_bad_placements_and_targets_are_refused():
    with pytest.raises(InvalidInput, match="layer"):
        Placement(layer="middle")
    with pytest.raises(InvalidInput, match="scale"):
        Placement(scale=(2.0, 1.0))
    with pytest.raises(InvalidInput, match="H x W uint8"):
        overlay(np.zeros((4, 4), np.int32), [], Placement(), np.random.default_rng(0))
