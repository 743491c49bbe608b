from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidInput
from core.io.atomic import previous_versions
from core.io.voc import parse_voc_xml
from core.store import DatasetStore
from core.types import Box, ClassSet
from tests.conftest import SAMPLES, shared_set


def open_dataset(root, layout=None):
    return DatasetStore(root, layout=layout)

VOC = ClassSet.builtin("voc")


def _write_rgb(path, h=20, w=30, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


# ---- VOC -----------------------------------------------------------------------------------


def test_bundled_samples_open_as_voc_with_boxes_label_maps_and_splits():
    ds = open_dataset(SAMPLES)
    assert ds.layout == "voc" and ds.classes == VOC and ds.problems == []
    assert ds.ids == ["astronaut", "chelsea", "coffee", "grace_hopper"]
    assert [s.id for s in ds if s.has_label_map] == ["astronaut", "chelsea", "coffee"]
    astronaut = ds.get("astronaut")
    # the XML says xmin=16 (1-based inclusive): the first covered column is 15
    assert astronaut.boxes == [Box(15, 12, 365, 512, VOC.index_of("person"))]
    assert astronaut.split == ("train",) and ds.get("coffee").split == ("val",)
    for sample in ds:
        image = ds.image(sample.id)
        label = ds.label_map(sample.id)
        assert image.dtype == np.uint8 and image.shape[2] == 3
        if label is not None:
            assert label.shape == image.shape[:2]
            assert set(np.unique(label)) <= {0, 255} | sample.box_classes()


def test_label_class_index_lives_in_the_workspace_and_follows_saves(samples_copy):
    ds = open_dataset(samples_copy)
    assert ds.label_classes() == {"astronaut": {0, 15}, "chelsea": {0, 8}, "coffee": {0, 11}}
    assert (ds.cache_dir / "index.sqlite").is_file() and not (samples_copy / ".segstudio").exists()
    label = ds.label_map("chelsea")
    label[:5, :5] = 12
    ds.save("chelsea", label_map=label)
    assert ds.label_classes()["chelsea"] == {0, 8, 12}
    assert DatasetStore(samples_copy).label_classes()["chelsea"] == {0, 8, 12}  # another process's view


def test_saving_label_maps_and_boxes_keeps_previous_versions(samples_copy):
    ds = open_dataset(samples_copy)
    h, w = ds.image("grace_hopper").shape[:2]
    label = np.zeros((h, w), np.uint8)
    label[100:300, 100:400] = 15
    assert ds.save("grace_hopper", label_map=label).kept == []  # a new file: nothing to keep
    label[:50] = 255
    kept = ds.save("grace_hopper", label_map=label).kept
    assert len(kept) == 1 and kept[0].is_file()
    reopened = open_dataset(samples_copy)
    assert np.array_equal(reopened.label_map("grace_hopper"), label)

    boxes = [Box(10, 10, 100, 100, 15), Box(-20, 5, 40, 50, 8)]
    ds.save("grace_hopper", boxes=boxes)
    reread = open_dataset(samples_copy).get("grace_hopper")
    assert reread.boxes == [Box(10, 10, 100, 100, 15), Box(0, 5, 40, 50, 8)]  # clipped to the image
    xml = samples_copy / "Annotations" / "grace_hopper.xml"
    assert len(previous_versions(samples_copy, xml)) == 1
    assert "<xmin>1</xmin>" in xml.read_text()  # written 1-based


def test_bad_saves_write_nothing(samples_copy):
    ds = open_dataset(samples_copy)
    before = (samples_copy / "SegmentationClass" / "chelsea.png").read_bytes()
    with pytest.raises(InvalidInput, match="same size"):
        ds.save("chelsea", label_map=np.zeros((3, 3), np.uint8))
    bad = ds.label_map("chelsea")
    bad[0, 0] = 99
    with pytest.raises(InvalidInput, match=r"99 \(1 px\)"):
        ds.save("chelsea", label_map=bad)
    with pytest.raises(InvalidInput, match="outside"):
        ds.save("chelsea", boxes=[Box(5000, 5000, 5010, 5010, 8)])
    with pytest.raises(InvalidInput, match="unknown class index 30"):
        ds.save("chelsea", boxes=[Box(0, 0, 10, 10, 30)])
    assert (samples_copy / "SegmentationClass" / "chelsea.png").read_bytes() == before
    assert not (samples_copy / ".segstudio" / "history").exists()


def test_broken_annotations_are_reported_and_skipped_not_fatal(samples_copy):
    (samples_copy / "Annotations" / "chelsea.xml").write_text("<annotation><object>")
    xml = (samples_copy / "Annotations" / "coffee.xml").read_text().replace("diningtable", "teapot")
    (samples_copy / "Annotations" / "coffee.xml").write_text(xml)
    (samples_copy / "JPEGImages" / "astronaut.png").write_bytes(b"same id, other suffix")
    ds = open_dataset(samples_copy)
    assert len(ds) == 4
    text = "\n".join(str(p) for p in ds.problems)
    assert "chelsea.xml: not a readable VOC annotation" in text
    assert "unknown class 'teapot'" in text
    assert "same id 'astronaut'" in text
    assert ds.get("coffee").boxes == []


def test_parse_voc_xml_reads_real_valued_corners(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>50</width><height>40</height></size><object><name>cat</name>"
        "<bndbox><xmin>1.0</xmin><ymin>2</ymin><xmax>10.5</xmax><ymax>20</ymax></bndbox></object></annotation>"
    )
    boxes, size, problems = parse_voc_xml(xml, VOC)
    assert size == (40, 50) and problems == []
    assert boxes == [Box(0, 1, 11, 20, 8)]


def test_custom_classes_json_is_used(samples_copy):
    classes = ClassSet("pets", ("background", "cat", "person", "diningtable"), np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]))  # fmt: skip
    classes.save(samples_copy / "classes.json")
    for name in ("astronaut", "chelsea", "coffee"):
        (samples_copy / "SegmentationClass" / f"{name}.png").unlink()
    ds = open_dataset(samples_copy)
    assert ds.classes == classes
    assert ds.get("chelsea").boxes[0].label == 1


# ---- boxes.csv -------------------------------------------------------------------------------


def _csv_set(root, rows, extra_header=()):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "boxes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "image", "mask", "x0", "y0", "x1", "y1", *extra_header])
        writer.writerows(rows)


def test_boxes_csv_folder_reads_inclusive_corners_and_0_1_255_masks(tmp_path):
    root = tmp_path / "set"
    _write_rgb(root / "images" / "a.jpg")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:12] = 1
    mask[4, :] = 255
    (root / "masks").mkdir()
    Image.fromarray(mask).save(root / "masks" / "a.png")
    _write_rgb(root / "images" / "b.bmp", seed=1)
    _csv_set(root, [["a", "images/a.jpg", "masks/a.png", 5, 5, 11, 9], ["b", "images/b.bmp", "", 0, 0, 29, 19],
                    ["c", "images/missing.jpg", "", 0, 0, 1, 1], ["d", "images/a.jpg", "", 9, 0, 3, 5]])  # fmt: skip
    ds = open_dataset(root)
    assert ds.layout == "boxes_csv" and ds.classes.names == ("background", "foreground")
    assert ds.ids == ["a", "b"]
    assert ds.get("a").boxes == [Box(5, 5, 12, 10, 1)]
    assert np.array_equal(ds.label_map("a"), mask)
    assert ds.get("b").label_path is None
    assert any("missing.jpg not found" in str(p) for p in ds.problems)
    assert any(":5: row skipped: empty box" in str(p) for p in ds.problems)


def test_boxes_csv_save_rewrites_only_that_sample_and_keeps_history(tmp_path):
    root = tmp_path / "set"
    _write_rgb(root / "images" / "a.jpg")
    _write_rgb(root / "images" / "b.jpg", seed=2)
    _csv_set(root, [["a", "images/a.jpg", "", 0, 0, 9, 9], ["b", "images/b.jpg", "", 1, 1, 5, 5]])
    ds = open_dataset(root)
    ds.save("a", boxes=[Box(2, 2, 8, 8, 1), Box(0, 0, 30, 20, 1)])
    again = open_dataset(root)
    assert again.get("a").boxes == [Box(2, 2, 8, 8, 1), Box(0, 0, 30, 20, 1)]
    assert again.get("b").boxes == [Box(1, 1, 6, 6, 1)]
    assert len(previous_versions(root, root / "boxes.csv")) == 1
    label = np.zeros((20, 30), np.uint8)
    label[2:8, 2:8] = 1
    again.save("a", label_map=label)
    assert (root / "masks" / "a.png").is_file()


def test_boxes_csv_with_missing_columns_is_refused(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    (root / "boxes.csv").write_text("name,image\nx,y\n")
    with pytest.raises(InvalidInput, match="missing columns mask, x0"):
        open_dataset(root)


def test_grabcut50_opens_with_one_box_per_image():
    root = shared_set("grabcut50")
    ds = open_dataset(root)
    assert ds.layout == "boxes_csv" and len(ds) == 50 and ds.problems == []
    for sample in ds.samples[:5]:
        assert len(sample.boxes) == 1
        assert ds.label_map(sample.id).shape == ds.image(sample.id).shape[:2]


# ---- plain folders ----------------------------------------------------------------------------


def test_plain_image_folder_is_found_recursively_and_saves_go_to_voc_places(tmp_path):
    root = tmp_path / "photos"
    _write_rgb(root / "a.jpg")
    _write_rgb(root / "trip" / "b.png", seed=3)
    (root / "notes.txt").write_text("not an image")
    _write_rgb(root / ".hidden" / "c.jpg")
    ds = open_dataset(root)
    assert ds.layout == "images" and ds.ids == ["a", "trip/b"]
    ds.save("trip/b", label_map=np.full((20, 30), 15, np.uint8), boxes=[Box(1, 1, 5, 5, 15)])
    again = open_dataset(root)
    assert again.ids == ["a", "trip/b"]  # the saved files are not mistaken for new images
    assert again.get("trip/b").has_label_map and again.get("trip/b").boxes == [Box(1, 1, 5, 5, 15)]
    assert again.thumbnail("a").is_file() and again.cache_dir in again.thumbnail("a").parents


def test_folders_without_images_and_missing_folders_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no images found"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(InvalidInput, match="unknown dataset layout 'nonsense'"):
        open_dataset(SAMPLES, layout="nonsense")
