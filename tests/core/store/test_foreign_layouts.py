"""Datasets written by other tools open in the store: COCO, YOLO segmentation, Cityscapes, mmsegmentation and
labelme. Each is built here with the tools' own conventions (pycocotools for COCO masks, OpenCV contours for YOLO
polygons as Ultralytics makes them, PIL for the index PNGs, plain JSON for labelme)."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from core.errors import InvalidInput
from core.store import DatasetStore
from core.store.layouts import detect_layout
from core.types import Box, ClassSet
from tests.conftest import SAMPLES
from tests.reliability.helpers import tree_digest

H, W = 48, 64
# pycocotools' decode warns under numpy 2 (its __array__ lacks the copy keyword); harmless here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _rgb(path, h=H, w=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _ellipse(center, axes, h=H, w=W) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


# ---- builders: each returns (root, facts the tests check) --------------------------------------------


def make_coco(tmp_path):
    """train2017/{a,b}.png; ``a`` holds a large cat (compressed RLE) with a dog polygon on it, a crowd of cats
    (uncompressed RLE), and an annotation of an unknown category; ``b`` has no annotation; ``c`` is missing."""
    root = tmp_path / "coco"
    _rgb(root / "train2017" / "a.png")
    _rgb(root / "train2017" / "b.png", seed=1)
    cat = np.zeros((H, W), bool)
    cat[4:40, 4:44] = True
    dog_poly = [20.0, 10.0, 36.0, 10.0, 36.0, 30.0, 20.0, 30.0]
    crowd = np.zeros((H, W), bool)
    crowd[40:46, 50:62] = True
    stranger = np.zeros((H, W), bool)
    stranger[2:8, 50:60] = True
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd.astype(np.uint8)))
    crowd_counts = []  # uncompressed (column-major run lengths), as COCO stores crowds
    flat, value, run = crowd.flatten(order="F"), False, 0
    for pixel in flat:
        if pixel != value:
            crowd_counts.append(run)
            value, run = pixel, 0
        run += 1
    crowd_counts.append(run)
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W},
                   {"id": 3, "file_name": "c.png", "height": H, "width": W}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": _rle(cat), "area": float(cat.sum()),
             "bbox": [4, 4, 40, 36], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "segmentation": [dog_poly], "area": 320.0,
             "bbox": [20, 10, 16, 20], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 1, "segmentation": {"size": [H, W], "counts": crowd_counts},
             "area": float(mask_utils.area(crowd_rle)), "bbox": [50, 40, 12, 6], "iscrowd": 1},
            {"id": 13, "image_id": 1, "category_id": 99, "segmentation": _rle(stranger), "area": 60.0,
             "bbox": [50, 2, 10, 6], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    }  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    dog = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([dog_poly], H, W))).astype(bool)
    expected = np.zeros((H, W), np.uint8)
    expected[crowd] = 255
    expected[stranger] = 255
    expected[cat] = 1
    expected[dog] = 2  # the smaller instance is painted last
    return root, {"expected": expected, "cat": cat, "dog": dog}


def make_yolo(tmp_path):
    """images/train/{x,y}.png (x labelled: a person ellipse, a car rectangle), images/val/z.png with a label
    line of odd tokens; names in data.yaml."""
    root = tmp_path / "yolo"
    person = _ellipse((22, 24), (14, 10))
    car = np.zeros((H, W), bool)
    car[6:20, 40:60] = True
    lines = []
    for cls, mask in ((0, person), (1, car)):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        points = contours[0].reshape(-1, 2).astype(float) / [W, H]
        lines.append(" ".join([str(cls), *(f"{v:.6f}" for v in points.reshape(-1))]))
    _rgb(root / "images" / "train" / "x.png")
    _rgb(root / "images" / "train" / "y.png", seed=1)
    _rgb(root / "images" / "val" / "z.png", seed=2)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "x.txt").write_text("\n".join(lines) + "\n")
    (root / "labels" / "val" / "z.txt").write_text("0 0.1 0.2 0.3\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: person\n  1: car\n")
    return root, {"person": person, "car": car}


CITY = "train/aachen/aachen_000000_000019"


def make_cityscapes(tmp_path):
    """leftImg8bit + gtFine labelIds for one image (road, car, unlabeled, parking), a second image without gt."""
    root = tmp_path / "cityscapes"
    _rgb(root / "leftImg8bit" / f"{CITY}_leftImg8bit.png")
    _rgb(root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png", seed=1)
    ids = np.full((H, W), 7, np.uint8)  # road
    ids[10:20, 10:30] = 26  # car
    ids[:3] = 0  # unlabeled
    ids[30:40, 40:60] = 9  # parking: void in the train ids
    gt = root / "gtFine" / f"{CITY}_gtFine_labelIds.png"
    gt.parent.mkdir(parents=True)
    Image.fromarray(ids, mode="L").save(gt)
    expected = np.zeros((H, W), np.uint8)
    expected[10:20, 10:30] = 13
    expected[:3] = 255
    expected[30:40, 40:60] = 255
    return root, {"expected": expected}


def make_mmseg(tmp_path, values=(0, 1, 2)):
    root = tmp_path / "mmseg"
    _rgb(root / "img_dir" / "train" / "a.jpg")
    _rgb(root / "img_dir" / "val" / "b.jpg", seed=1)
    ann = np.full((H, W), values[0], np.uint8)
    ann[5:25, 5:25] = values[1]
    ann[30:40, :] = values[2]
    ann[0, :] = 255
    (root / "ann_dir" / "train").mkdir(parents=True)
    Image.fromarray(ann, mode="L").save(root / "ann_dir" / "train" / "a.png")
    return root, {"expected": ann}


def make_labelme(tmp_path):
    """a.jpg + a.json (a cat polygon, a dog rectangle), b.jpg without JSON, a broken JSON, a JSON whose image
    is missing."""
    root = tmp_path / "labelme"
    _rgb(root / "a.jpg")
    _rgb(root / "b.jpg", seed=1)
    cat_points = [[6, 6], [30, 4], [34, 30], [18, 40], [4, 28]]
    doc = {
        "version": "5.4.1", "flags": {},
        "shapes": [
            {"label": "cat", "points": cat_points, "group_id": None, "shape_type": "polygon", "flags": {}},
            {"label": "dog", "points": [[40, 10], [58, 30]], "group_id": None, "shape_type": "rectangle", "flags": {}},
            {"label": "dog", "points": [[50, 40]], "group_id": None, "shape_type": "point", "flags": {}},
        ],
        "imagePath": "a.jpg", "imageData": None, "imageHeight": H, "imageWidth": W,
    }  # fmt: skip
    (root / "a.json").write_text(json.dumps(doc, indent=2))
    (root / "broken.json").write_text('{"version": "5.4.1", "shapes": [')
    (root / "ghost.json").write_text(json.dumps({**doc, "imagePath": "ghost.jpg"}))
    cat = np.zeros((H, W), np.uint8)
    cv2.fillPoly(cat, [np.array(cat_points, np.int32)], 1)
    dog = np.zeros((H, W), bool)
    dog[10:31, 40:59] = True
    return root, {"cat": cat.astype(bool), "dog": dog}


BUILDERS = {"coco": make_coco, "yolo": make_yolo, "cityscapes": make_cityscapes, "mmseg": make_mmseg,
            "labelme": make_labelme}  # fmt: skip


# ---- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_each_layout_is_detected_from_its_files(tmp_path, layout):
    root, _ = BUILDERS[layout](tmp_path)
    assert detect_layout(root) == layout
    assert DatasetStore(root).layout == layout


def test_own_layouts_are_still_detected_as_before(tmp_path):
    assert detect_layout(SAMPLES) == "voc"
    photos = tmp_path / "photos"
    _rgb(photos / "a.jpg")
    (photos / "settings.json").write_text('{"images": "elsewhere"}')  # a JSON that is neither COCO nor labelme
    (photos / "images").mkdir()
    _rgb(photos / "images" / "b.jpg")  # an images/ folder without labels/
    assert detect_layout(photos) == "images"
    boxes = tmp_path / "boxes"
    _rgb(boxes / "images" / "a.jpg")
    (boxes / "labels").mkdir()
    (boxes / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (boxes / "boxes.csv").write_text("name,image,mask,x0,y0,x1,y1\na,images/a.jpg,,1,1,5,5\n")
    assert detect_layout(boxes) == "boxes_csv"


# ---- reading -----------------------------------------------------------------------------------------


def test_coco_masks_are_exact_crowds_and_unknown_categories_are_ignore(tmp_path):
    root, facts = make_coco(tmp_path)
    store = DatasetStore(root)
    assert store.classes.names == ("background", "cat", "dog")
    assert store.ids == ["train2017/a", "train2017/b"]
    label = store.label_map("train2017/a")
    assert np.array_equal(label, facts["expected"])
    assert store.label_map("train2017/b") is None  # no annotation: unlabelled, not background
    assert store.labelled_ids() == ["train2017/a"]
    sample = store.get("train2017/a")
    assert sample.split == ("train2017",)
    assert sorted(sample.boxes, key=lambda b: b.label) == [Box(4, 4, 44, 40, 1), Box(20, 10, 36, 30, 2)]
    problems = [str(p) for p in store.problems]
    assert any("unknown category id 99" in p for p in problems)
    assert any("'c.png' (id 3) not found" in p for p in problems)
    assert store.label_classes() == {"train2017/a": {0, 1, 2}}


def test_coco_reads_the_files_segstudio_exports_back_exactly(tmp_path):
    """SegStudio's COCO export stores the ignore pixels as ``ignore_rle``: an image whose map is all background
    and ignore is still labelled, and the map comes back exactly."""
    root = tmp_path / "export"
    _rgb(root / "images" / "p.png")
    truth = np.zeros((H, W), np.uint8)
    truth[:5] = 255
    truth[10:20, 10:20] = 4
    doc = {"images": [{"id": 1, "file_name": "images/p.png", "height": H, "width": W, "ignore_rle": _rle(truth == 255)}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "segmentation": _rle(truth == 4),
                            "bbox": [10, 10, 10, 10], "area": 100.0, "iscrowd": 0}],
           "categories": [{"id": i, "name": n} for i, n in enumerate(ClassSet.builtin("voc").names) if i]}  # fmt: skip
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    ClassSet.builtin("voc").save(root / "classes.json")
    store = DatasetStore(root)
    assert store.layout == "coco" and store.classes == ClassSet.builtin("voc")
    assert np.array_equal(store.label_map("images/p"), truth)


def test_a_broken_coco_file_is_reported_and_the_others_still_open(tmp_path):
    root, _ = make_coco(tmp_path)
    (root / "annotations" / "instances_val2017.json").write_text('{"images": [{"id": 1, "file_name": "x.png"},')
    store = DatasetStore(root)
    assert store.ids == ["train2017/a", "train2017/b"]
    assert any("instances_val2017.json" in str(p) and "not readable JSON" in str(p) for p in store.problems)


def test_yolo_polygons_fill_their_regions_and_bad_label_files_are_reported(tmp_path):
    root, facts = make_yolo(tmp_path)
    store = DatasetStore(root)
    assert store.classes.names == ("background", "person", "car")
    assert store.ids == ["train/x", "train/y", "val/z"]
    label = store.label_map("train/x")
    assert _iou(label == 1, facts["person"]) >= 0.95
    assert _iou(label == 2, facts["car"]) >= 0.95
    assert (label == 0).sum() >= 0.9 * (~(facts["person"] | facts["car"])).sum()
    assert set(np.unique(label)) <= {0, 1, 2}
    x = store.get("train/x")
    assert x.split == ("train",)
    assert sorted(x.boxes, key=lambda b: b.label) == [Box(8, 14, 37, 35, 1), Box(40, 6, 60, 20, 2)]
    assert store.label_map("train/y") is None  # no label file: unlabelled
    assert store.label_map("val/z") is None  # odd tokens: reported, unlabelled
    assert any("z.txt:1: 3 coordinates" in str(p) for p in store.problems)


def test_yolo_box_lines_and_unknown_classes_are_ignore_never_background(tmp_path):
    root, facts = make_yolo(tmp_path)
    (root / "labels" / "train" / "y.txt").write_text("7 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n1 0.75 0.5 0.25 0.5\n")
    store = DatasetStore(root)
    label = store.label_map("train/y")
    assert (label[8:18, 8:24] == 255).all()  # class 7 is not in data.yaml
    assert (label[13:35, 41:55] == 255).all()  # a box line: the mask inside it is unknown
    assert label[40, 30] == 0
    assert store.get("train/y").boxes == [Box(40, 12, 56, 36, 2)]
    assert any("class ids 7" in str(p) for p in store.problems)


def test_cityscapes_label_ids_map_to_train_ids_exactly(tmp_path):
    root, facts = make_cityscapes(tmp_path)
    store = DatasetStore(root)
    assert store.classes == ClassSet.builtin("cityscapes")
    assert store.ids == [CITY, "val/lindau/lindau_000000_000019"]
    assert np.array_equal(store.label_map(CITY), facts["expected"])
    assert store.get(CITY).split == ("train",)
    assert store.label_map("val/lindau/lindau_000000_000019") is None


def test_cityscapes_with_a_mapping_json_names_its_own_values(tmp_path):
    root, _ = make_cityscapes(tmp_path)
    (root / "mapping.json").write_text(json.dumps({"0": None, "7": "road", "9": None, "26": "car"}))
    store = DatasetStore(root)
    assert store.classes.names[7] == "road" and store.classes.names[26] == "car" and len(store.classes) == 27
    label = store.label_map(CITY)
    assert (label[5:8, 0] == 7).all() and label[15, 15] == 26 and label[0, 0] == 255 and label[35, 50] == 255


def test_mmseg_index_pngs_are_read_exactly_with_scanned_or_given_classes(tmp_path):
    root, facts = make_mmseg(tmp_path)
    store = DatasetStore(root)
    assert store.classes.names == ("class_0", "class_1", "class_2")
    assert store.ids == ["train/a", "val/b"]
    assert np.array_equal(store.label_map("train/a"), facts["expected"])
    assert store.label_map("val/b") is None
    assert store.get("train/a").split == ("train",)


def test_mmseg_values_outside_classes_json_make_the_map_unusable_and_reported(tmp_path):
    root, _ = make_mmseg(tmp_path, values=(0, 1, 9))
    ClassSet.from_json(["background", "thing"]).save(root / "classes.json")
    store = DatasetStore(root)
    data = store.read("train/a")
    assert data.label_map is None and "9 (" in data.label_problem
    assert store.labelled_ids() == []
    assert any("a.png" in p.path and "values not in class set" in p.reason for p in store.problems)


def test_labelme_shapes_are_drawn_and_bad_files_reported(tmp_path):
    root, facts = make_labelme(tmp_path)
    store = DatasetStore(root)
    assert store.classes.names == ("background", "cat", "dog")
    assert store.ids == ["a", "b"]
    label = store.label_map("a")
    assert _iou(label == 1, facts["cat"]) >= 0.95
    assert _iou(label == 2, facts["dog"]) >= 0.95
    assert set(np.unique(label)) == {0, 1, 2}  # the point shape adds nothing
    assert store.get("a").boxes == [Box(4, 4, 35, 41, 1), Box(40, 10, 59, 31, 2)]
    assert store.label_map("b") is None
    problems = [str(p) for p in store.problems]
    assert any("broken.json" in p and "not readable JSON" in p for p in problems)
    assert any("ghost.json" in p and "not found" in p for p in problems)


# ---- never writing, saving beside --------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_reading_every_sample_leaves_the_folder_byte_identical(tmp_path, layout):
    root, _ = BUILDERS[layout](tmp_path)
    before = tree_digest(root)
    store = DatasetStore(root)
    for sample_id in store.ids:
        store.read(sample_id)
        store.label_facts(sample_id)
        store.thumbnail(sample_id)
        store.revision(sample_id)
    store.check()
    assert store.labelled_ids()
    assert tree_digest(root) == before
    assert not store.cache_dir.is_relative_to(root)
    assert (store.cache_dir / "index.sqlite").is_file()


@pytest.mark.parametrize("layout", ["coco", "yolo", "labelme"])
def test_a_save_goes_beside_the_foreign_files_and_wins_over_the_derived_map(tmp_path, layout):
    root, _ = BUILDERS[layout](tmp_path)
    store = DatasetStore(root)
    sample_id = store.labelled_ids()[0]
    foreign = {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.suffix in (".json", ".txt")}
    base = store.revision(sample_id)
    assert store.save(sample_id, label_map=store.label_map(sample_id), base_revision=base).written == []
    edited = store.label_map(sample_id).copy()
    edited[:4, :4] = 255
    boxes = [Box(1, 1, 9, 9, 1)]
    result = store.save(sample_id, label_map=edited, boxes=boxes, base_revision=base)
    assert result.written == [
        root / "SegmentationClass" / f"{sample_id}.png",
        root / "Annotations" / f"{sample_id}.xml",
    ]
    assert {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in foreign} == foreign  # never rewritten
    again = DatasetStore(root)
    assert again.layout == layout and again.ids == store.ids
    assert np.array_equal(again.label_map(sample_id), edited)
    assert again.get(sample_id).boxes == boxes
    assert again.revision(sample_id) == result.revision != base


def test_saving_a_cityscapes_sample_as_a_copy_is_found_again(tmp_path):
    root, facts = make_cityscapes(tmp_path)
    store = DatasetStore(root)
    label = store.label_map(CITY)
    label[0:2, 0:2] = 0
    result = store.save(CITY, label_map=label, on_conflict="copy")
    assert result.sample_id == f"{CITY}_copy" and result.resolution == "copied"
    assert (root / "leftImg8bit" / f"{CITY}_copy_leftImg8bit.png").is_file()
    assert np.array_equal(store.label_map(f"{CITY}_copy"), label)
    assert np.array_equal(store.label_map(CITY), facts["expected"])


def test_a_yolo_label_file_changed_by_another_program_is_read_again(tmp_path):
    root, _ = make_yolo(tmp_path)
    store = DatasetStore(root)
    before = store.revision("train/x")
    (root / "labels" / "train" / "x.txt").write_text("1 0.0 0.0 0.5 0.0 0.5 0.5 0.0 0.5\n")
    assert store.revision("train/x") != before
    assert store.get("train/x").boxes == [Box(0, 0, 33, 25, 2)]
    label = store.label_map("train/x")
    assert set(np.unique(label)) == {0, 2} and (label[:24, :32] == 2).all()


def test_an_unknown_layout_name_is_refused_with_the_accepted_ones(tmp_path):
    root, _ = make_yolo(tmp_path)
    with pytest.raises(InvalidInput, match="accepted: voc, boxes_csv, images, cityscapes, mmseg, yolo, coco, labelme"):
        DatasetStore(root, layout="darknet")


# ---- round trip through SegStudio's own exporter (core/export/formats.py) ---------------------------


def _export_formats(tmp_path, classes: ClassSet, label: np.ndarray):
    formats = pytest.importorskip("core.export.formats")
    if not hasattr(formats, "write_formats"):
        pytest.skip("core.export.formats has no write_formats")
    from core.io.images import save_label_map

    out = tmp_path / "export"
    _rgb(out / "JPEGImages" / "s1.png")
    save_label_map(out / "SegmentationClass" / "s1.png", label, classes)
    record = {"output_id": "s1", "split": "train", "kind": "real", "provenance": {},
              "files": {"image": "JPEGImages/s1.png", "label": "SegmentationClass/s1.png"}}  # fmt: skip
    formats.write_formats(out, [record], ["train"], classes, ["yolo-seg", "mmseg", "cityscapes"], workers=1)
    return out


def _round_trip_label(h=H, w=W) -> np.ndarray:
    label = np.zeros((h, w), np.uint8)
    label[_ellipse((24, 24), (16, 14))] = 8  # a cat with a hole holding a dog
    label[_ellipse((24, 24), (5, 5))] = 12
    label[5:20, 45:60] = 15
    label[40:, 50:] = 255
    return label


def test_exported_formats_read_back_as_written(tmp_path):
    voc_set = ClassSet.builtin("voc")
    label = _round_trip_label()
    out = _export_formats(tmp_path, voc_set, label)
    for folder, layout in (("mmseg", "mmseg"), ("cityscapes", "cityscapes")):
        store = DatasetStore(out / folder)
        assert store.layout == layout and store.classes == voc_set and store.problems == []
        (sample_id,) = store.ids
        assert np.array_equal(store.label_map(sample_id), label), layout
    yolo = DatasetStore(out / "yolo")
    assert yolo.layout == "yolo" and yolo.classes == voc_set and yolo.ids == ["train/s1"]
    back = yolo.label_map("train/s1")
    for cls in (8, 12, 15):
        assert _iou(back == cls, label == cls) >= 0.95, cls
    assert 255 not in back  # YOLO cannot say "void": the exporter drops it, the reader cannot bring it back


def test_exported_cityscapes_ids_read_back_as_train_ids(tmp_path):
    city = ClassSet.builtin("cityscapes")
    label = np.full((H, W), 0, np.uint8)
    label[10:30, 10:40] = 13
    label[:4] = 255
    out = _export_formats(tmp_path, city, label)
    store = DatasetStore(out / "cityscapes")
    assert store.classes == city
    assert np.array_equal(store.label_map("train/segstudio/s1"), label)
