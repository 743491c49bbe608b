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
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.export.make import Made
from core.io import voc
from core.io.atomic import atomic_write_text
from core.io.images import encode_label_png, load_label_map
from core.types import Box, ClassSet

OWNED = ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets", "annotations", "review")
COPIED_SUFFIXES = (".jpg", ".jpeg", ".png")
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file (mkstemp makes 0600)


def file_facts(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha1": hashlib.sha1(data).hexdigest(), "size": len(data)}


def _classes_present(label_map: np.ndarray, skipped: Iterable[int]) -> list[int]:
    """The values of ``label_map`` but ``skipped``, ascending (a histogram for ``uint8``: no sort)."""
    values = np.flatnonzero(np.bincount(label_map.ravel())) if label_map.dtype == np.uint8 else np.unique(label_map)
    skipped = set(skipped)
    return [int(c) for c in values if int(c) not in skipped]


def class_instances(label_map: np.ndarray, class_ids: Iterable[int], *, fortran: bool = False) -> list[tuple[int, np.ndarray]]:
    """``(class, H x W bool mask)`` per 8-connected component of each of ``class_ids`` present in ``label_map``
    (``H x W uint8``), by class then by position (cv2's component order); with ``fortran`` the masks are
    Fortran-ordered (what pycocotools encodes, without a copy)."""
    import cv2

    wanted = set(class_ids)
    out = []
    for cls in (c for c in _classes_present(label_map, ()) if c in wanted):
        count, components = cv2.connectedComponents((label_map == cls).astype(np.uint8), connectivity=8)
        components = np.asfortranarray(components) if fortran else components
        out += [(cls, components == n) for n in range(1, count)]
    return out


def instances(label_map: np.ndarray, ignore_index: int = 255, *, fortran: bool = False) -> list[tuple[int, np.ndarray]]:
    """:func:`class_instances` of every class but 0 and ``ignore_index``."""
    return class_instances(label_map, _classes_present(label_map, (0, ignore_index)), fortran=fortran)


def instance_boxes(label_map: np.ndarray, ignore_index: int = 255) -> list[Box]:
    """One box per instance (see :func:`instances`, same order), half-open."""
    import cv2

    boxes = []
    for cls in _classes_present(label_map, (0, ignore_index)):
        count, _, stats, _ = cv2.connectedComponentsWithStats((label_map == cls).astype(np.uint8), connectivity=8)
        for x, y, w, h in (stats[n, :4].tolist() for n in range(1, count)):
            boxes.append(Box(x, y, x + w, y + h, cls))
    return boxes


def write_sample(out: Path, output_id: str, made: Made, classes: ClassSet) -> dict[str, dict]:
    """Write one sample's image, label map and boxes; returns ``relative path -> {sha1, size}``."""
    out = Path(out)
    if made.image_file is not None:
        suffix = made.image_file.suffix.lower()
        suffix = ".jpg" if suffix == ".jpeg" else suffix
        if suffix in COPIED_SUFFIXES:
            image_path = out / voc.IMAGE_DIR / f"{output_id}{suffix}"
            image = made.image_file.read_bytes()
        else:  # formats the readers of VOC folders may not know: re-encoded losslessly
            from core.io.images import load_image

            image_path = out / voc.IMAGE_DIR / f"{output_id}.png"
            image = _encode_image(load_image(made.image_file), "PNG")
    else:
        image_path = out / voc.IMAGE_DIR / f"{output_id}.jpg"
        image = _encode_image(made.image, "JPEG")
    boxes = made.boxes if made.boxes is not None else instance_boxes(made.label_map, classes.ignore_index)
    height, width = made.label_map.shape
    files = {image_path: image, out / voc.LABEL_DIR / f"{output_id}.png": encode_label_png(made.label_map, classes),
             out / voc.ANNOTATION_DIR / f"{output_id}.xml": voc.voc_xml(image_path.name, (height, width), boxes, classes)}  # fmt: skip
    return {str(path.relative_to(out)): _put(path, data) for path, data in files.items()}


def _encode_image(image: np.ndarray, fmt: str) -> bytes:
    """The bytes :func:`core.io.images.save_image` writes for an ``H x W x 3 uint8`` RGB image (JPEG: quality 95)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InvalidInput(f"an image must be H x W x 3 uint8 RGB, got shape {arr.shape} and dtype {arr.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _put(path: Path, data: bytes) -> dict:
    """Write ``data`` to ``path`` atomically and durably (a temporary file in the same folder, fsync, rename);
    returns its ``{sha1, size}``. Unlike :func:`core.io.atomic.atomic_write` it does not look for stale temporaries
    at every write (a scan of the whole folder: quadratic over an export's thousands of files);
    :func:`clear_temporaries` removes them once per run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(name, FILE_MODE)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return {"sha1": hashlib.sha1(data).hexdigest(), "size": len(data)}


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
    from core.export.formats import FORMAT_DIRS, HF_SCRATCH
    from core.export.ledger import LEDGER_FILE

    for folder in (*OWNED, *FORMAT_DIRS.values(), HF_SCRATCH):
        shutil.rmtree(Path(out) / folder, ignore_errors=True)
    for name in ("manifest.jsonl", "export.json", "classes.json", LEDGER_FILE, f"{LEDGER_FILE}-wal", f"{LEDGER_FILE}-shm"):
        (Path(out) / name).unlink(missing_ok=True)


def write_splits(out: Path, records: list[dict], splits: list[str]) -> None:
    """``ImageSets/Segmentation/<split>.txt``: the sample ids of each split, in plan order."""
    for split in splits:
        ids = [r["output_id"] for r in records if r["split"] == split]
        atomic_write_text(Path(out) / voc.IMAGESETS_DIR / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))


BACKGROUND_NAMES = ("background", "_background_", "__background__")


def first_class(classes: ClassSet) -> int:
    """The first index that is a real class: 1 when class 0 is a background, else 0 (Cityscapes' road)."""
    return 1 if classes.names[0].strip().lower() in BACKGROUND_NAMES else 0


def coco_entries(label_map: np.ndarray, classes: ClassSet) -> dict:
    """A sample's COCO content, computed where the sample is made: ``{"height", "width", "ignore_rle", "annotations":
    [{category_id, segmentation (RLE), area, bbox}]}`` for an ``H x W uint8`` label map (one annotation per
    8-connected instance of each class; background and ignore are not categories)."""
    from pycocotools import mask as mask_utils

    height, width = label_map.shape
    ignore = mask_utils.encode(np.asfortranarray(label_map == classes.ignore_index))
    categories = [c for c in range(first_class(classes), len(classes)) if c != classes.ignore_index]
    annotations = []
    for cls, mask in class_instances(label_map, categories, fortran=True):
        rle = mask_utils.encode(mask)
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        annotations.append({"category_id": cls, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                            "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0})  # fmt: skip
    return {"height": height, "width": width, "annotations": annotations,
            "ignore_rle": {"size": ignore["size"], "counts": ignore["counts"].decode("ascii")}}  # fmt: skip


def write_coco(out: Path, records: list[dict], splits: list[str], classes: ClassSet,
               entries: dict[str, dict] | None = None) -> list[Path]:  # fmt: skip
    """``annotations/instances_<split>.json`` per split (see the module docstring); returns the files.

    ``entries`` maps output ids to :func:`coco_entries` computed when the samples were made; samples without
    one are read back and encoded here."""
    entries = entries or {}
    start = first_class(classes)
    categories = [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(classes.names) if i >= start]
    written = []
    for split in splits:
        images, annotations = [], []
        for record in (r for r in records if r["split"] == split):
            entry = entries.get(record["output_id"])
            if entry is None:
                entry = coco_entries(load_label_map(Path(out) / record["files"]["label"], classes), classes)
            image_id = record["position"] + 1
            images.append({"id": image_id, "file_name": record["files"]["image"], "height": entry["height"],
                           "width": entry["width"], "ignore_rle": entry["ignore_rle"]})  # fmt: skip
            for annotation in entry["annotations"]:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
        doc = {"info": {"description": "SegStudio export", "version": "1"}, "licenses": [], "images": images,
               "annotations": annotations, "categories": categories}  # fmt: skip
        path = Path(out) / "annotations" / f"instances_{split}.json"
        atomic_write_text(path, json.dumps(doc, sort_keys=True))
        written.append(path)
    return written
