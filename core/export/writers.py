"""Writing an export: every sample in the VOC layout as its job finishes, then the split lists, COCO files and
provenance once every job is done.

Layout of ``OUT``:

- ``JPEGImages/<id>.<ext>`` (a real sample's image bytes copied as they are; generated ones as JPEG, quality 95),
  ``SegmentationClass/<id>.png`` (palette PNG), ``Annotations/<id>.xml`` (the sample's boxes, or one box per
  connected instance of each class for generated samples), ``ImageSets/Segmentation/<split>.txt``,
  ``classes.json``;
- with ``coco``: ``annotations/instances_<split>.json``: one image per sample (``file_name`` relative to
  ``OUT``), one annotation per instance (8-connected component of a class) with an RLE mask (pycocotools),
  bbox, area and ``iscrowd`` 0; background (0) and ignore (255) are not categories; the image entry's
  ``ignore_rle`` holds the ignore pixels, so that the annotations give back the label map exactly;
- ``manifest.jsonl`` (one provenance line per sample, in plan order) and ``export.json`` (recipe, versions,
  counts, failures).

All files are written atomically, with deterministic bytes: the same recipe gives the same tree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from core.export.make import Made
from core.io import voc
from core.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from core.io.images import load_label_map, save_image, save_label_map
from core.types import Box, ClassSet

OWNED = ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets", "annotations", "review")
COPIED_SUFFIXES = (".jpg", ".jpeg", ".png")


def file_facts(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha1": hashlib.sha1(data).hexdigest(), "size": len(data)}


def instances(label_map: np.ndarray, ignore_index: int = 255) -> list[tuple[int, np.ndarray]]:
    """``(class, H x W bool mask)`` per 8-connected component of every class but 0 and ``ignore_index``, by class
    then by position."""
    import cv2

    out = []
    for cls in (int(c) for c in np.unique(label_map)):
        if cls in (0, ignore_index):
            continue
        count, components = cv2.connectedComponents((label_map == cls).astype(np.uint8), connectivity=8)
        out += [(cls, components == n) for n in range(1, count)]
    return out


def instance_boxes(label_map: np.ndarray, ignore_index: int = 255) -> list[Box]:
    """One box per instance (see :func:`instances`), half-open."""
    boxes = []
    for cls, mask in instances(label_map, ignore_index):
        ys, xs = np.nonzero(mask)
        boxes.append(Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, cls))
    return boxes


def write_sample(out: Path, output_id: str, made: Made, classes: ClassSet) -> dict[str, dict]:
    """Write one sample's image, label map and boxes; returns ``relative path -> {sha1, size}``."""
    out = Path(out)
    if made.image_file is not None:
        suffix = made.image_file.suffix.lower()
        suffix = ".jpg" if suffix == ".jpeg" else suffix
        image_path = out / voc.IMAGE_DIR / f"{output_id}{suffix if suffix in COPIED_SUFFIXES else '.png'}"
        if suffix in COPIED_SUFFIXES:
            atomic_write(image_path, lambda tmp: shutil.copyfile(made.image_file, tmp))
        else:  # formats the readers of VOC folders may not know: re-encoded losslessly
            from core.io.images import load_image

            save_image(image_path, load_image(made.image_file))
    else:
        image_path = out / voc.IMAGE_DIR / f"{output_id}.jpg"
        save_image(image_path, made.image)
    label_path = out / voc.LABEL_DIR / f"{output_id}.png"
    save_label_map(label_path, made.label_map, classes)
    boxes = made.boxes if made.boxes is not None else instance_boxes(made.label_map, classes.ignore_index)
    height, width = made.label_map.shape
    xml_path = out / voc.ANNOTATION_DIR / f"{output_id}.xml"
    atomic_write_bytes(xml_path, voc.voc_xml(image_path.name, (height, width), boxes, classes))
    return {str(p.relative_to(out)): file_facts(p) for p in (image_path, label_path, xml_path)}


def files_intact(out: Path, files: dict[str, dict] | None) -> bool:
    """Whether a finished job's files are all there with their recorded sizes (cheap: no re-hashing)."""
    if not files:
        return False
    for relative, facts in files.items():
        path = Path(out) / relative
        try:
            if path.stat().st_size != facts["size"]:
                return False
        except OSError:
            return False
    return True


def clear_temporaries(out: Path) -> int:
    """Remove temporary files a killed run left in the export's folders; returns how many."""
    removed = 0
    for folder in OWNED:
        for tmp in (Path(out) / folder).rglob(".*.tmp") if (Path(out) / folder).is_dir() else []:
            tmp.unlink(missing_ok=True)
            removed += 1
    for tmp in Path(out).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def remove_export(out: Path) -> None:
    """Delete a previous export's files (``--force``): only what an export writes, nothing else in ``OUT``."""
    from core.export.ledger import LEDGER_FILE

    for folder in OWNED:
        shutil.rmtree(Path(out) / folder, ignore_errors=True)
    for name in ("manifest.jsonl", "export.json", "classes.json", LEDGER_FILE, f"{LEDGER_FILE}-wal", f"{LEDGER_FILE}-shm"):
        (Path(out) / name).unlink(missing_ok=True)


def write_splits(out: Path, records: list[dict], splits: list[str]) -> None:
    """``ImageSets/Segmentation/<split>.txt``: the sample ids of each split, in plan order."""
    for split in splits:
        ids = [r["output_id"] for r in records if r["split"] == split]
        atomic_write_text(Path(out) / voc.IMAGESETS_DIR / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))


def write_coco(out: Path, records: list[dict], splits: list[str], classes: ClassSet) -> list[Path]:
    """``annotations/instances_<split>.json`` per split (see the module docstring); returns the files."""
    from pycocotools import mask as mask_utils

    categories = [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(classes.names) if i != 0]
    written = []
    for split in splits:
        images, annotations = [], []
        for record in (r for r in records if r["split"] == split):
            label_map = load_label_map(Path(out) / record["files"]["label"], classes)
            height, width = label_map.shape
            image_id = record["position"] + 1
            ignore = mask_utils.encode(np.asfortranarray(label_map == classes.ignore_index))
            images.append({"id": image_id, "file_name": record["files"]["image"], "height": height, "width": width,
                           "ignore_rle": {"size": ignore["size"], "counts": ignore["counts"].decode("ascii")}})  # fmt: skip
            for cls, mask in instances(label_map, classes.ignore_index):
                rle = mask_utils.encode(np.asfortranarray(mask))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls,
                                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                                    "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0})  # fmt: skip
        doc = {"info": {"description": "SegStudio export", "version": "1"}, "licenses": [], "images": images,
               "annotations": annotations, "categories": categories}  # fmt: skip
        path = Path(out) / "annotations" / f"instances_{split}.json"
        atomic_write_text(path, json.dumps(doc, sort_keys=True))
        written.append(path)
    return written
