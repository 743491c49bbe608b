from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.store import Dataset, Sample, natural_key
from core.types import (
    ADE20K_COLORS,
    Box,
    ClassSet,
    classes_in,
    voc_colormap,
)

# ---- Box ---------------------------------------------------------------------------------


def test_box_is_half_open():
    box = Box(2, 3, 5, 7, label=4)
    assert (box.width, box.height, box.area) == (3, 4, 12)
    mask = box.mask(10, 10)
    assert mask.dtype == bool and mask.sum() == 12
    assert mask[3, 2] and mask[6, 4] and not mask[7, 4] and not mask[3, 5]


@pytest.mark.parametrize("corners", [(5, 0, 5, 3), (0, 5, 3, 5), (4, 4, 2, 8)])
def test_empty_box_is_refused_with_the_corners_in_the_message(corners):
    with pytest.raises(InvalidInput, match="empty box") as err:
        Box(*corners)
    assert str(corners[0]) in str(err.value)


def test_box_rejects_non_integer_and_non_finite_corners_and_bad_labels():
    with pytest.raises(InvalidInput, match="integers"):
        Box(0.5, 0, 3, 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="finite"):
        Box.from_floats(0, 0, float("nan"), 3)
    with pytest.raises(InvalidInput, match="0..254"):
        Box(0, 0, 3, 3, label=255)


def test_inclusive_and_xywh_conversions_round_trip():
    box = Box.from_inclusive(10, 20, 29, 49, label=1)
    assert box == Box(10, 20, 30, 50, 1)
    assert box.to_inclusive() == (10, 20, 29, 49)
    assert Box.from_xywh(*box.to_xywh(), label=1) == box
    assert Box.from_floats(0.4, 0.6, 9.2, 9.9) == Box(0, 0, 10, 10)


@given(
    x0=st.integers(-50, 200), y0=st.integers(-50, 200), w=st.integers(1, 100), h=st.integers(1, 100),
    width=st.integers(1, 150), height=st.integers(1, 150),
)  # fmt: skip
def test_clip_stays_inside_the_image_or_says_the_box_is_outside(x0, y0, w, h, width, height):
    box = Box(x0, y0, x0 + w, y0 + h)
    overlaps = x0 < width and y0 < height and x0 + w > 0 and y0 + h > 0
    if not overlaps:
        with pytest.raises(InvalidInput, match="outside"):
            box.clip(width, height)
        return
    clipped = box.clip(width, height)
    assert 0 <= clipped.x0 < clipped.x1 <= width and 0 <= clipped.y0 < clipped.y1 <= height
    assert clipped.mask(height, width).sum() == clipped.area


# ---- ClassSet ----------------------------------------------------------------------------


def test_builtin_class_sets_have_their_published_sizes_and_colours():
    voc = ClassSet.builtin("voc")
    assert len(voc) == 21 and voc.names[15] == "person" and voc.color_of(15) == (192, 128, 128)
    assert voc.color_of(255) == (224, 224, 192)
    city = ClassSet.builtin("cityscapes")
    assert len(city) == 19 and city.names[0] == "road" and city.color_of(0) == (128, 64, 128)
    ade = ClassSet.builtin("ade20k")
    assert len(ade) == 150 and ade.names[0] == "wall" and ade.names[149] == "flag"
    with pytest.raises(InvalidInput, match="accepted: voc, cityscapes, ade20k"):
        ClassSet.builtin("coco")


def test_voc_colormap_matches_the_devkit():
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert (
        cmap[1].tolist() == [128, 0, 0] and cmap[20].tolist() == [0, 64, 128] and cmap[255].tolist() == [224, 224, 192]
    )


def test_ade20k_colours_equal_controlnet_aux_palette():
    util = pytest.importorskip("controlnet_aux.util")
    assert np.array_equal(np.asarray(util.ade_palette()), np.asarray(ADE20K_COLORS))


def test_palette_puts_class_colours_first_and_ignore_at_255():
    classes = ClassSet("two", ("bg", "thing"), np.array([[1, 2, 3], [4, 5, 6]]))
    pal = classes.palette()
    assert pal[0].tolist() == [1, 2, 3] and pal[1].tolist() == [4, 5, 6] and pal[255].tolist() == [224, 224, 192]


def test_classes_json_round_trip(tmp_path):
    classes = ClassSet("mine", ("background", "road", "car"), np.array([[0, 0, 0], [128, 64, 128], [0, 0, 142]]))
    classes.save(tmp_path / "classes.json")
    assert ClassSet.load(tmp_path / "classes.json") == classes
    doc = json.loads((tmp_path / "classes.json").read_text())
    assert doc["classes"][2] == {"id": 2, "name": "car", "color": [0, 0, 142]}


def test_classes_json_accepts_a_plain_list_and_unordered_ids(tmp_path):
    assert ClassSet.from_json(["bg", "cat"]).names == ("bg", "cat")
    doc = {"classes": [{"id": 1, "name": "cat"}, {"id": 0, "name": "bg", "color": [9, 9, 9]}]}
    parsed = ClassSet.from_json(doc)
    assert parsed.names == ("bg", "cat") and parsed.color_of(0) == (9, 9, 9)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"classes": [{"id": 0, "name": "a"}, {"id": 2, "name": "b"}]}, "without gaps"),
        ({"classes": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]}, "twice"),
        ({"classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "a"}]}, "unique"),
        ({"classes": [{"id": 0}]}, "name"),
        ({"labels": []}, "classes"),
        ({"classes": [{"id": 0, "name": "a", "color": [0, 0, 300]}]}, "0..255"),
    ],
)
def test_bad_classes_json_is_refused_with_the_reason(doc, message):
    with pytest.raises(InvalidInput, match=message):
        ClassSet.from_json(doc)


def test_unreadable_classes_json_names_the_file(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="classes.json"):
        ClassSet.load(path)


def test_index_of_is_case_insensitive_and_lists_known_names():
    voc = ClassSet.builtin("voc")
    assert voc.index_of("Person") == 15
    with pytest.raises(InvalidInput, match="unknown class 'unicorn'.*aeroplane"):
        voc.index_of("unicorn")
    with pytest.raises(InvalidInput, match="0..20"):
        voc.check_index(21)


# ---- Sample / Dataset ---------------------------------------------------------------------


def test_dataset_lookup_filter_and_duplicate_ids(tmp_path):
    voc = ClassSet.builtin("voc")
    a = Sample("a", tmp_path / "a.jpg", boxes=[Box(0, 0, 2, 2, 15)])
    b = Sample("b", tmp_path / "b.jpg", boxes=[Box(0, 0, 2, 2, 8)])
    ds = Dataset(tmp_path, "voc", voc, [a, b])
    assert ds.get("b") is b and ds.ids == ["a", "b"]
    assert ds.filter_by_classes([15]) == [a]
    assert ds.filter_by_classes([15, 8], {"a": {8}}) == [a]
    assert ds.filter_by_classes([]) == [a, b]
    with pytest.raises(InvalidInput, match="no sample 'c'"):
        ds.get("c")
    with pytest.raises(InvalidInput, match="repeated sample ids: a"):
        Dataset(tmp_path, "voc", voc, [a, Sample("a", tmp_path / "x.jpg")])


def test_classes_in_drops_ignore():
    label = np.array([[0, 255], [3, 3]], dtype=np.uint8)
    assert classes_in(label) == [0, 3]


def test_natural_order_puts_img_2_before_img_10():
    names = ["img_10", "img_1", "IMG_2", "b", "a10b", "a9b"]
    assert sorted(names, key=natural_key) == ["a9b", "a10b", "b", "img_1", "IMG_2", "img_10"]
