"""Export formats (core/export/formats.py) read back with what their users read them with: YOLO-seg labels
rasterised with cv2.fillPoly (as Ultralytics does), mmseg and Cityscapes PNGs with Pillow, the hf copy with
``datasets.load_from_disk``; and the same recipe gives the same bytes."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidInput
from core.export.formats import (
    FORMAT_DIRS,
    HF_SCRATCH,
    cityscapes_paths,
    class_instances,
    mask_polygon,
    write_formats,
    yolo_class_ids,
    yolo_coordinates,
)
from core.export.recipe import Recipe
from core.export.runner import run_export
from core.io.images import load_image, load_label_map
from core.types import ClassSet
from tests.conftest import SAMPLES
from tests.reliability.helpers import tree_digest

VOC = ClassSet.builtin("voc")
ALL = ["voc", "yolo-seg", "mmseg", "cityscapes", "hf"]


def _recipe(source: Path) -> Recipe:
    return Recipe.from_dict({"source": str(source), "seed": 3, "generate": [{"backend": "composite", "count": 6}],
                             "split": {"train": 0.5, "val": 0.5}, "formats": ALL})  # fmt: skip


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _without_ledger(tree: dict) -> dict:
    return {k: v for k, v in tree.items() if "segstudio-export.sqlite" not in k}


def _hf_cache_listing() -> set[str]:
    import datasets

    root = Path(datasets.config.HF_DATASETS_CACHE)
    return {str(p) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """One export of the bundled samples plus 6 composites in every format (made once for the module)."""
    base = tmp_path_factory.mktemp("formats")
    with pytest.MonkeyPatch.context() as env:  # the module scope runs before conftest's per-test isolation
        env.setenv("SEGSTUDIO_WORKSPACE", str(base / "workspace"))
        env.setenv("SEGSTUDIO_MODELS", str(base / "models"))
        source = base / "samples"
        shutil.copytree(SAMPLES, source)
        before = _hf_cache_listing()
        summary = run_export(_recipe(source), base / "out")
        assert not summary.failures and summary.made == 9
        assert _hf_cache_listing() == before, "the hf writer must not write to HF_DATASETS_CACHE"
    return base / "out"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _rasterise(values: list[float], shape: tuple[int, int], rounding) -> np.ndarray:
    """``H x W bool``: one YOLO polygon (normalised ``x y`` pairs) filled at image size, vertices rounded by
    ``rounding`` (Ultralytics' polygon2mask truncates with ``astype(int32)``)."""
    height, width = shape
    points = np.asarray(values, dtype=np.float64).reshape(-1, 2) * [width, height]
    canvas = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(canvas, [rounding(points).astype(np.int32)], 1)
    return canvas.astype(bool)


# --------------------------------------------------------------------------------------------
# YOLO
# --------------------------------------------------------------------------------------------


def test_yolo_lines_rasterise_back_to_every_instance(export):
    import yaml

    ious = []
    for record in _records(export):
        label_map = load_label_map(export / record["files"]["label"], VOC)
        image = Path(record["files"]["image"])
        yolo_image = export / "yolo" / "images" / record["split"] / f"{record['output_id']}{image.suffix}"
        assert os.path.samefile(yolo_image, export / image)  # a hard link, not a second copy
        lines = (export / "yolo" / "labels" / record["split"] / f"{record['output_id']}.txt").read_text().splitlines()
        expected = class_instances(label_map, range(1, len(VOC)))
        assert len(lines) == len(expected) > 0
        for line, (cls, mask) in zip(lines, expected, strict=True):
            fields = line.split()
            values = [float(v) for v in fields[1:]]
            assert int(fields[0]) == cls - 1 and len(values) % 2 == 0 and len(values) >= 6
            assert all(0.0 <= v <= 1.0 for v in values)
            for rounding in (np.round, np.floor):
                ious.append(_iou(_rasterise(values, label_map.shape, rounding), mask))
    assert min(ious) >= 0.95, f"worst IoU {min(ious):.4f}"
    data = yaml.safe_load((export / "yolo" / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val" and "path" not in data
    assert data["names"] == dict(enumerate(VOC.names[1:]))


def _shapes() -> list[np.ndarray]:
    """Masks with holes, several parts joined only by corners, thin lines and single pixels."""
    ring = np.zeros((40, 40), np.uint8)
    cv2.circle(ring, (20, 20), 15, 1, -1)
    cv2.circle(ring, (20, 20), 6, 0, -1)
    holes = np.ones((30, 50), np.uint8)
    holes[[0, -1], :] = holes[:, [0, -1]] = 0
    holes[5:10, 5:12] = holes[15:25, 30:45] = holes[12, 20] = 0
    nested = np.zeros((40, 40), np.uint8)
    nested[2:38, 2:38] = 1
    nested[8:32, 8:32] = 0
    nested[14:26, 14:26] = 1  # an island inside the hole: another instance
    line = np.zeros((10, 30), np.uint8)
    line[4, 3:27] = 1
    diagonal = np.eye(12, dtype=np.uint8)
    dot = np.zeros((5, 5), np.uint8)
    dot[2, 3] = 1
    speckled = np.zeros((90, 120), np.uint8)
    cv2.ellipse(speckled, (60, 45), (50, 35), 15, 0, 360, 1, -1)
    speckled[np.random.default_rng(0).random(speckled.shape) < 0.03] = 0
    return [ring, holes, nested, line, diagonal, dot, speckled]


@pytest.mark.parametrize("shape", range(7))
def test_one_polygon_per_instance_keeps_holes_empty(shape):
    label_map = _shapes()[shape]
    instances = class_instances(label_map, [1])
    for _, mask in instances:
        polygon = mask_polygon(mask)
        assert polygon.ndim == 2 and polygon.shape[1] == 2 and len(polygon) >= 3
        canvas = np.zeros(mask.shape, np.uint8)
        cv2.fillPoly(canvas, [polygon], 1)
        assert _iou(canvas.astype(bool), mask) >= 0.95
    if shape == 0:  # the hole stays a hole
        assert len(instances) == 1 and not instances[0][1][20, 20]
        canvas = np.zeros(label_map.shape, np.uint8)
        cv2.fillPoly(canvas, [mask_polygon(instances[0][1])], 1)
        assert canvas[18:23, 18:23].sum() == 0
    if shape == 2:
        assert len(instances) == 2


def test_yolo_coordinates_give_the_pixel_back_rounded_or_truncated():
    for size in (1, 7, 300, 451, 512, 1000, 2048, 4095, 16384):
        values = np.arange(size)
        text = yolo_coordinates(values, size)
        for dtype in (np.float64, np.float32):  # Ultralytics reads labels as float32
            parsed = np.array(text, dtype=dtype)
            assert (parsed <= 1.0).all()
            assert np.array_equal((parsed * dtype(size)).astype(np.int32), values)  # polygon2mask truncates
            assert np.array_equal(np.round(parsed * dtype(size)).astype(np.int32), values)


def test_yolo_classes_skip_only_a_background_class():
    assert yolo_class_ids(VOC)[1] == 0 and 0 not in yolo_class_ids(VOC) and len(yolo_class_ids(VOC)) == 20
    cityscapes = ClassSet.builtin("cityscapes")
    assert yolo_class_ids(cityscapes) == {i: i for i in range(19)}  # road (0) is a real class there


# --------------------------------------------------------------------------------------------
# mmseg and Cityscapes
# --------------------------------------------------------------------------------------------


def test_mmseg_annotations_are_the_label_maps(export):
    info = json.loads((export / "mmseg" / "classes.json").read_text())
    assert info["reduce_zero_label"] is False and info["classes"] == list(VOC.names)
    assert info["palette"] == VOC.colors.tolist() and info["img_suffix"] == ".jpg"
    config = (export / "mmseg" / "segstudio_dataset.py").read_text()
    ast.parse(config)
    assert "reduce_zero_label=False" in config and "img_path='img_dir/val'" in config
    for record in _records(export):
        name, split = record["output_id"], record["split"]
        with Image.open(export / "mmseg" / "ann_dir" / split / f"{name}.png") as ann:
            assert ann.mode == "L"
            assert np.array_equal(np.asarray(ann), load_label_map(export / record["files"]["label"], VOC))
        assert os.path.samefile(export / "mmseg" / "img_dir" / split / f"{name}.jpg", export / record["files"]["image"])


def test_cityscapes_label_ids_train_ids_and_colours(export):
    mapping = json.loads((export / "cityscapes" / "mapping.json").read_text())
    assert mapping["official_cityscapes_ids"] is False
    assert [(c["id"], c["trainId"]) for c in mapping["classes"]] == [(i, i) for i in range(21)] + [(255, 255)]
    for record in _records(export):
        paths = cityscapes_paths(export / "cityscapes", record["split"], record["output_id"])
        label_map = load_label_map(export / record["files"]["label"], VOC)
        for kind in ("labelIds", "labelTrainIds"):
            assert np.array_equal(np.asarray(Image.open(paths[kind])), label_map)
        assert np.array_equal(np.asarray(Image.open(paths["color"]).convert("RGB")), VOC.palette()[label_map])
        with Image.open(paths["image"]) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert np.array_equal(np.asarray(image), load_image(export / record["files"]["image"]))


def _fake_export(out: Path, classes: ClassSet) -> list[dict]:
    """Two samples written straight in the VOC layout: ``a`` with an RGB PNG image, ``b`` with a JPEG."""
    rng = np.random.default_rng(1)
    records = []
    for name, suffix in (("a", ".png"), ("b", ".jpg")):
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (out / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(out / "JPEGImages" / f"{name}{suffix}")
        label_map = rng.integers(0, len(classes), (24, 32)).astype(np.uint8)
        label_map[:3] = classes.ignore_index
        labels = Image.fromarray(label_map, mode="P")
        labels.putpalette(classes.palette().reshape(-1).tolist())
        labels.save(out / "SegmentationClass" / f"{name}.png")
        records.append({"output_id": name, "split": "train", "kind": "real", "provenance": {"source": name},
                        "files": {"image": f"JPEGImages/{name}{suffix}", "label": f"SegmentationClass/{name}.png"}})  # fmt: skip
    return records


def test_cityscapes_class_set_gets_the_official_ids_and_mixed_images_become_png(tmp_path):
    classes = ClassSet.builtin("cityscapes")
    records = _fake_export(tmp_path, classes)
    write_formats(tmp_path, records, ["train", "val"], classes, ["cityscapes", "mmseg"])
    official = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])
    for record in records:
        paths = cityscapes_paths(tmp_path / "cityscapes", "train", record["output_id"])
        label_map = load_label_map(tmp_path / record["files"]["label"], classes)
        void = label_map == 255
        label_ids, train_ids = np.asarray(Image.open(paths["labelIds"])), np.asarray(Image.open(paths["labelTrainIds"]))
        assert np.array_equal(label_ids[~void], official[label_map[~void]]) and (label_ids[void] == 0).all()
        assert np.array_equal(train_ids, label_map)
        colours = np.asarray(Image.open(paths["color"]))
        assert np.array_equal(colours[~void], classes.colors[label_map[~void]]) and (colours[void] == 0).all()
        mmseg_image = tmp_path / "mmseg" / "img_dir" / "train" / f"{record['output_id']}.png"  # one suffix for all
        assert np.array_equal(np.asarray(Image.open(mmseg_image)), load_image(tmp_path / record["files"]["image"]))
    assert os.path.samefile(
        cityscapes_paths(tmp_path / "cityscapes", "train", "a")["image"], tmp_path / "JPEGImages/a.png"
    )
    mapping = json.loads((tmp_path / "cityscapes" / "mapping.json").read_text())
    assert mapping["classes"][0] == {"index": 0, "name": "road", "id": 7, "trainId": 0, "color": [128, 64, 128]}
    assert mapping["classes"][-1]["id"] == 0 and mapping["classes"][-1]["trainId"] == 255
    assert json.loads((tmp_path / "mmseg" / "classes.json").read_text())["splits"] == ["train"]


# --------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------


def test_hf_copy_loads_back_with_the_exact_label_maps(export):
    import datasets

    loaded = datasets.load_from_disk(str(export / "hf"))
    records = _records(export)
    assert sorted(loaded) == ["train", "val"]
    for split in loaded:
        ours = [r for r in records if r["split"] == split]
        assert loaded[split]["id"] == [r["output_id"] for r in ours]
        for row, record in zip(loaded[split], ours, strict=True):
            assert np.array_equal(np.asarray(row["label"]), load_label_map(export / record["files"]["label"], VOC))
            assert np.array_equal(
                np.asarray(row["image"].convert("RGB")), load_image(export / record["files"]["image"])
            )
            assert row["kind"] == record["kind"] and row["split"] == split
            assert json.loads(row["provenance"]) == record["provenance"]
    assert not (export / HF_SCRATCH).exists()


# --------------------------------------------------------------------------------------------
# Determinism, reruns, validation
# --------------------------------------------------------------------------------------------


def test_the_same_recipe_gives_the_same_tree(export, tmp_path):
    run_export(_recipe(export.parent / "samples"), tmp_path / "again")  # same source: the recipe includes its path
    first, second = _without_ledger(tree_digest(export)), _without_ledger(tree_digest(tmp_path / "again"))
    assert any(k.startswith(os.path.join("hf", "train")) for k in first)
    assert first == second


def test_writing_again_cleans_leftovers_and_changes_nothing(export, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(export, out)
    before = tree_digest(out)
    (out / "yolo" / "labels" / "train" / ".coffee.txt.abc123.tmp").write_text("half a file")
    (out / HF_SCRATCH / "cache").mkdir(parents=True)
    write_formats(out, _records(out), ["train", "val"], VOC, list(FORMAT_DIRS), workers=1)
    assert tree_digest(out) == before


@pytest.mark.parametrize(("formats", "split", "message"), [
    (["parquet"], "train", "unknown export format 'parquet'; accepted here: cityscapes"),
    (["mmseg"], "test", "is in split 'test'; accepted: train, val"),
])  # fmt: skip
def test_bad_formats_and_splits_are_refused(export, formats, split, message):
    records = [{**r, "split": split} for r in _records(export)]
    with pytest.raises(InvalidInput, match=message):
        write_formats(export, records, ["train", "val"], VOC, formats)
