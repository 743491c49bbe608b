"""The training formats an export can add beside its VOC layout: YOLO segmentation, mmsegmentation, Cityscapes and
Hugging Face ``datasets``.

:func:`write_formats` runs once every job is done (``finish`` in :mod:`core.export.runner`) and builds each format
from the VOC files already in ``OUT`` (``JPEGImages/<id>.<ext>``, ``SegmentationClass/<id>.png``), each in its own
folder (:data:`FORMAT_DIRS`). An image whose bytes are unchanged is a hard link to the VOC file (a copy where the
file system refuses links), so a format costs almost no disk; a file written anew goes to a temporary file that is
renamed into place. The bytes depend only on the records and the VOC files: the same recipe gives the same tree.

``yolo-seg`` (Ultralytics), in ``yolo/``:
    ``images/<split>/<id>.<ext>`` (links), ``labels/<split>/<id>.txt``, ``data.yaml`` (``train``/``val``/... for
    the splits that have samples, ``names``; no ``path`` key, so Ultralytics resolves the folders against the
    yaml's own folder and the export can be moved). One line per instance (8-connected component of a class):
    ``<class> x1 y1 x2 y2 ...``. YOLO classes are the real classes, 0-based: when class 0 of the set is
    ``background`` (VOC and most custom sets) class ``k`` becomes ``k - 1`` and background is no class;
    otherwise (Cityscapes, ADE20K) the indices stay. Ignore pixels (255) cannot be expressed in YOLO-seg: they
    are simply not part of any instance. A vertex is a boundary pixel's index over the image size (the
    convention of Ultralytics' own mask converter) plus 0.01 pixel, rounded up to 6 decimals, so that rounding or
    truncating ``value * size`` (Ultralytics parses float32 and its ``polygon2mask`` truncates) gives the pixel
    back. An instance with holes is one polygon: each hole's contour is joined to the outline by a
    zero-width bridge between their closest vertices (as Ultralytics' ``merge_multi_segment`` joins COCO parts),
    so an even-odd fill (``cv2.fillPoly``) leaves the holes empty.

``mmseg`` (mmsegmentation ``BaseSegDataset``), in ``mmseg/``:
    ``img_dir/<split>/<id><ext>`` (links; when the export mixes ``.jpg`` and ``.png`` images, all are PNG, JPEGs
    decoded and re-encoded losslessly, as mmseg takes one ``img_suffix``), ``ann_dir/<split>/<id>.png``
    (single-channel PNG of class indices, 255 ignore: every decode backend of mmcv reads it as indices),
    ``segstudio_dataset.py`` (config snippet: ``metainfo`` with ``classes`` and ``palette``, one dataset dict per
    split, ``reduce_zero_label=False``: 0 is a real class), ``classes.json`` and ``README.md``.

``cityscapes``, in ``cityscapes/``:
    ``leftImg8bit/<split>/segstudio/<id>_leftImg8bit.png`` (PNG: a PNG VOC image is linked, any other is decoded
    and re-encoded losslessly), ``gtFine/<split>/segstudio/<id>_gtFine_labelIds.png``, ``..._labelTrainIds.png``
    (cityscapesScripts' name, which mmseg's ``CityscapesDataset`` reads) and ``..._color.png`` (RGB), and
    ``mapping.json`` (``id``, ``trainId``, ``name``, ``color`` per class). With the built-in Cityscapes class set
    (19 classes, index = train id) label ids are the official ones (road 7, ... bicycle 33), ignore becomes label id
    0 (``unlabeled``, colour black) and train id 255. With any other set label id = train id = class index, ignore
    stays 255 (so the two files are the same bytes: linked) and is drawn in the set's ignore colour.

``hf`` (Hugging Face ``datasets``), in ``hf/``:
    a ``DatasetDict`` saved with ``save_to_disk``, one split per split that has samples (``datasets`` cannot save
    an empty split), features ``id``, ``split``, ``kind`` (strings), ``image`` and ``label`` (``Image``: the VOC
    files' bytes, so ``label`` decodes to the palette label map, class indices with 255 ignore) and ``provenance``
    (JSON string); plus ``classes.json``. Built from a generator into a scratch folder inside ``OUT`` (memory stays
    bounded; nothing goes to ``HF_DATASETS_CACHE``), with fingerprints hashed from the records, then moved into
    place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.export.writers import class_instances, first_class
from core.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from core.io.images import load_image, load_label_map
from core.types import ClassSet

FORMAT_DIRS = {"cityscapes": "cityscapes", "yolo-seg": "yolo", "mmseg": "mmseg", "hf": "hf"}
HF_SCRATCH = ".hf-build"  # scratch folder of the hf writer inside OUT (removed when it is done)
CITYSCAPES_CITY = "segstudio"
# Official Cityscapes label ids of the 19 train ids (cityscapesScripts, helpers/labels.py).
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_UNLABELED = 0
RECORD_KEYS = ("output_id", "split", "files", "kind", "provenance")
PHOTO_PNG_LEVEL = 1  # zlib level of photos re-encoded as PNG (label maps keep the default 6)
_SCALE = 1_000_000  # YOLO coordinates are written with 6 decimals


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_formats(
    out: Path,
    records: list[dict],
    splits: list[str],
    classes: ClassSet,
    formats: list[str],
    *,
    workers: int | None = None,
) -> None:
    """Write the extra ``formats`` of a finished export into their folders of ``out`` (see the module docstring).

    Args:
        out: the export folder, holding the VOC files the records name.
        records: the finished samples in plan order (``output_id``, ``split``, ``files``, ``kind``, ``provenance``).
        splits: the recipe's split names; every record's split is one of them.
        classes: the class set of the label maps.
        formats: a subset of :data:`FORMAT_DIRS` (``cityscapes``, ``yolo-seg``, ``mmseg``, ``hf``).
        workers: threads for the per-sample work (default: up to 8, one per CPU).

    Raises:
        InvalidInput: an unknown format, a record without its keys or with a split not in ``splits``.
    """
    out = Path(out)
    _check(records, splits, formats)
    workers = workers or min(8, os.cpu_count() or 1)
    clear_format_temporaries(out, formats)
    writers = {"yolo-seg": write_yolo, "mmseg": write_mmseg, "cityscapes": write_cityscapes, "hf": write_hf}
    for name in FORMAT_DIRS:  # a fixed order, whatever the recipe's
        if name in formats:
            writers[name](out, records, splits, classes, workers=workers)


def _check(records: list[dict], splits: list[str], formats: list[str]) -> None:
    unknown = [f for f in formats if f not in FORMAT_DIRS]
    if unknown:
        raise InvalidInput(f"unknown export format {unknown[0]!r}; accepted here: {', '.join(FORMAT_DIRS)}")
    for position, record in enumerate(records):
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise InvalidInput(
                f"export record {position} lacks {', '.join(missing)}; records need {', '.join(RECORD_KEYS)}"
            )
        if record["split"] not in splits:
            raise InvalidInput(
                f"export record {record['output_id']!r} is in split {record['split']!r}; accepted: {', '.join(splits)}"
            )


def clear_format_temporaries(out: Path, formats: Iterable[str] = FORMAT_DIRS) -> int:
    """Remove what a killed run left in the formats' folders (temporary files, the hf scratch folder); returns how
    many. Safe only while no writer runs there (``finish`` writes the formats alone, after every job)."""
    removed = 0
    for name in formats:
        folder = Path(out) / FORMAT_DIRS[name]
        for tmp in folder.rglob(".*.tmp") if folder.is_dir() else []:
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed += 1
    if "hf" in formats and (Path(out) / HF_SCRATCH).exists():
        shutil.rmtree(Path(out) / HF_SCRATCH)
        removed += 1
    return removed


# --------------------------------------------------------------------------------------------
# Files: links, PNGs, a thread pool
# --------------------------------------------------------------------------------------------


def link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` atomically: a hard link when the file system allows it, else a copy."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # os.link needs a free name; the random one stays ours in practice
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or one without hard links
        atomic_write(dst, lambda t: shutil.copyfile(src, t))
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of an ``H x W uint8`` (single channel) or ``H x W x 3 uint8`` (RGB) array (zlib level
    ``compress_level``: photos take 1, three times faster than 6 for 3% more bytes)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _is_plain_png(path: Path) -> bool:
    """Whether ``path`` is an 8-bit RGB PNG (what PNG-only formats can link to as it is)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.format == "PNG" and img.mode == "RGB"


def _write_png_image(src: Path, dst: Path) -> None:
    """``dst`` (a ``.png``): a link to ``src`` when it is an RGB PNG, else ``src`` decoded and re-encoded losslessly."""
    if _is_plain_png(src):
        link_or_copy(src, dst)
    else:
        atomic_write_bytes(dst, png_bytes(load_image(src), PHOTO_PNG_LEVEL))


def _each(function: Callable[[dict], object], records: list[dict], workers: int) -> list:
    """``function(record)`` for every record, in order, on ``workers`` threads (OpenCV and Pillow release the GIL)."""
    if workers <= 1 or len(records) <= 1:
        return [function(r) for r in records]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, records))


def _ids_by_split(records: list[dict], splits: list[str]) -> dict[str, list[dict]]:
    """The records of each split that has any, in plan order."""
    grouped = {split: [r for r in records if r["split"] == split] for split in splits}
    return {split: rs for split, rs in grouped.items() if rs}


# --------------------------------------------------------------------------------------------
# YOLO segmentation
# --------------------------------------------------------------------------------------------


def yolo_class_ids(classes: ClassSet) -> dict[int, int]:
    """Class index -> YOLO class: background (a class 0 named ``background``) is no class, the rest are 0-based."""
    first = first_class(classes)
    return {index: index - first for index in range(first, len(classes))}


def yolo_names(classes: ClassSet) -> dict[int, str]:
    """YOLO class -> name, as ``data.yaml``'s ``names``."""
    return {yolo: classes.names[index] for index, yolo in yolo_class_ids(classes).items()}


def _closest(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 22) -> tuple[int, int]:
    """Indices ``(i, j)`` of the closest pair ``a[i]``, ``b[j]`` (``N x 2`` and ``M x 2`` int arrays; the first
    pair on ties), in chunks of ``b`` that keep the distance table near ``chunk`` entries."""
    a = a.astype(np.int64)
    step = max(1, chunk // max(1, len(a)))
    best = (np.iinfo(np.int64).max, 0, 0)
    for start in range(0, len(b), step):
        part = b[start : start + step].astype(np.int64)
        d = ((a[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[0]:
            best = (int(d[i, j]), int(i), int(j) + start)
    return best[1], best[2]


def bridge(outline: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Join ``ring`` (a hole or another part, ``M x 2``) to ``outline`` (``N x 2``) by a zero-width bridge between
    their closest vertices: ``outline[:i+1]``, the ring from ``ring[j]`` round to ``ring[j]``, ``outline[i:]``."""
    i, j = _closest(outline, ring)
    turned = np.roll(ring, -j, axis=0)
    return np.concatenate([outline[: i + 1], turned, turned[:1], outline[i:]])


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """One polygon for an ``H x W bool`` mask (one instance): its outline with every hole bridged in (see
    :func:`bridge`), as ``K x 2 int32`` pixel indices ``(x, y)``, ``K >= 3`` (a tiny instance repeats a vertex).
    ``cv2.fillPoly`` of it gives the mask back (holes included, through the even-odd fill) up to the bridges."""
    import cv2

    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise InvalidInput("an instance mask must have at least one pixel set")
    order = sorted(range(len(contours)), key=lambda k: (hierarchy[0][k][3] >= 0, k))  # outlines first, then holes
    rings = [contours[k].reshape(-1, 2) for k in order]
    polygon = rings[0]
    for ring in rings[1:]:
        polygon = bridge(polygon, ring)
    if len(polygon) < 3:
        polygon = np.concatenate([polygon, np.repeat(polygon[-1:], 3 - len(polygon), axis=0)])
    return polygon.astype(np.int32)


def yolo_coordinates(values: np.ndarray, size: int) -> list[str]:
    """Normalised coordinates with 6 decimals: ``values`` (pixel indices ``0..size-1``, int) over ``size``, plus a
    margin of 0.01 to 0.01 + ``size / 1e6`` pixel, rounded up, so that rounding or truncating ``value * size`` gives
    the index back even in float32 (how Ultralytics parses labels). Integer arithmetic: the same input always gives
    the same text."""
    numerator = (values.astype(np.int64) * 100 + 1) * _SCALE
    scaled = np.minimum(-(-numerator // (100 * int(size))), _SCALE)  # ceil((x + 0.01) / size * 1e6)
    return [f"{int(v) // _SCALE}.{int(v) % _SCALE:06d}" for v in scaled]


def yolo_label_text(label_map: np.ndarray, classes: ClassSet) -> str:
    """The YOLO-seg label file of an ``H x W uint8`` label map: one ``class x1 y1 ...`` line per instance."""
    height, width = label_map.shape
    ids = yolo_class_ids(classes)
    lines = []
    for cls, mask in class_instances(label_map, ids):
        polygon = mask_polygon(mask)
        xs, ys = yolo_coordinates(polygon[:, 0], width), yolo_coordinates(polygon[:, 1], height)
        lines.append(" ".join([str(ids[cls]), *(f"{x} {y}" for x, y in zip(xs, ys, strict=True))]))
    return "".join(f"{line}\n" for line in lines)


def _yolo_sample(out: Path, record: dict, classes: ClassSet) -> None:
    image = Path(record["files"]["image"])
    root = out / FORMAT_DIRS["yolo-seg"]
    link_or_copy(out / image, root / "images" / record["split"] / f"{record['output_id']}{image.suffix}")
    label_map = load_label_map(out / record["files"]["label"], classes)
    atomic_write_text(
        root / "labels" / record["split"] / f"{record['output_id']}.txt", yolo_label_text(label_map, classes)
    )


def yolo_data_yaml(splits: Iterable[str], classes: ClassSet) -> str:
    """``data.yaml``: one ``<split>: images/<split>`` per split, ``names`` (YOLO class -> name); no ``path``."""
    import yaml

    doc = {split: f"images/{split}" for split in splits}
    doc["names"] = yolo_names(classes)
    head = ("# Ultralytics YOLO segmentation dataset written by SegStudio. No 'path' key: Ultralytics resolves the\n"
            "# folders below against this file's folder. Ignore (void) pixels are not expressible in YOLO-seg.\n")  # fmt: skip
    if "val" not in doc:
        head += "# This export has no 'val' split, which Ultralytics requires: add one (e.g. val: images/train).\n"
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_yolo(out: Path, records: list[dict], splits: list[str], classes: ClassSet, *, workers: int = 1) -> None:
    """``yolo/``: images (links), one label file per sample, ``data.yaml`` (see the module docstring)."""
    out = Path(out)
    _each(lambda r: _yolo_sample(out, r, classes), records, workers)
    present = _ids_by_split(records, splits)
    atomic_write_text(out / FORMAT_DIRS["yolo-seg"] / "data.yaml", yolo_data_yaml(present, classes))


# --------------------------------------------------------------------------------------------
# mmsegmentation
# --------------------------------------------------------------------------------------------


def mmseg_image_suffix(records: list[dict]) -> str:
    """The one image suffix of the mmseg copy: the VOC images' own when they share one, else ``.png``."""
    suffixes = {Path(r["files"]["image"]).suffix.lower() for r in records}
    return suffixes.pop() if len(suffixes) == 1 else ".png"


def _mmseg_sample(out: Path, record: dict, classes: ClassSet, suffix: str) -> None:
    image = out / record["files"]["image"]
    root = out / FORMAT_DIRS["mmseg"]
    name, split = record["output_id"], record["split"]
    target = root / "img_dir" / split / f"{name}{suffix}"
    if image.suffix.lower() == suffix:
        link_or_copy(image, target)
    else:
        atomic_write_bytes(target, png_bytes(load_image(image), PHOTO_PNG_LEVEL))
    label_map = load_label_map(out / record["files"]["label"], classes)
    atomic_write_bytes(root / "ann_dir" / split / f"{name}.png", png_bytes(label_map))


def mmseg_metainfo(classes: ClassSet) -> dict:
    """``metainfo`` of the dataset: ``classes`` (names, index order) and ``palette`` (``[r, g, b]`` per class)."""
    return {"classes": list(classes.names), "palette": [[int(c) for c in row] for row in classes.colors]}


def mmseg_config(splits: Iterable[str], classes: ClassSet, suffix: str) -> str:
    """A config snippet (mmsegmentation 1.x, mmengine) declaring ``metainfo`` and one dataset dict per split."""
    lines = ["# mmsegmentation dataset written by SegStudio: include it with _base_ or copy what you need.",
             "# 0 is a real class (background or the set's first class): keep reduce_zero_label=False.",
             "dataset_type = 'BaseSegDataset'", "data_root = '{{ fileDirname }}'",
             f"metainfo = {mmseg_metainfo(classes)!r}"]  # fmt: skip
    for split in splits:
        lines.append(f"{split}_dataset = dict(type=dataset_type, data_root=data_root, metainfo=metainfo, "
                     f"data_prefix=dict(img_path='img_dir/{split}', seg_map_path='ann_dir/{split}'), "
                     f"img_suffix='{suffix}', seg_map_suffix='.png', reduce_zero_label=False, "
                     f"ignore_index={classes.ignore_index})")  # fmt: skip
    lines.append("# e.g. train_dataloader = dict(dataset=dict(**train_dataset, pipeline=train_pipeline), ...)")
    return "\n".join(lines) + "\n"


MMSEG_README = """# mmsegmentation copy of a SegStudio export

- `img_dir/<split>/<id>{suffix}`: images; `ann_dir/<split>/<id>.png`: single-channel PNGs of class indices,
  {ignore} = ignore (`ignore_index={ignore}`).
- Class 0 is a real class ({first}), not "unlabelled": use `reduce_zero_label=False`.
- `classes.json` and `segstudio_dataset.py` give the class names and palette (`metainfo`) and one dataset dict per
  split for `BaseSegDataset`.
"""


def write_mmseg(out: Path, records: list[dict], splits: list[str], classes: ClassSet, *, workers: int = 1) -> None:
    """``mmseg/``: images, single-channel annotation PNGs, config snippet, ``classes.json``, ``README.md``."""
    out = Path(out)
    root = out / FORMAT_DIRS["mmseg"]
    suffix = mmseg_image_suffix(records)
    _each(lambda r: _mmseg_sample(out, r, classes, suffix), records, workers)
    present = list(_ids_by_split(records, splits))
    info = {**mmseg_metainfo(classes), "reduce_zero_label": False, "ignore_index": classes.ignore_index,
            "img_suffix": suffix, "seg_map_suffix": ".png", "splits": present}  # fmt: skip
    atomic_write_text(root / "classes.json", json.dumps(info, indent=2) + "\n")
    atomic_write_text(root / "segstudio_dataset.py", mmseg_config(present, classes, suffix))
    readme = MMSEG_README.format(suffix=suffix, ignore=classes.ignore_index, first=classes.names[0])
    atomic_write_text(root / "README.md", readme)


# --------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------


def is_cityscapes(classes: ClassSet) -> bool:
    """Whether ``classes`` is the built-in Cityscapes set (19 classes, index = official train id)."""
    return classes == ClassSet.builtin("cityscapes")


def cityscapes_tables(classes: ClassSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables from our label values: label ids and train ids (``256 uint8`` each) and colours
    (``256 x 3 uint8``), following the rule in the module docstring."""
    if is_cityscapes(classes):
        label_ids = np.full(256, CITYSCAPES_UNLABELED, dtype=np.uint8)
        label_ids[: len(classes)] = CITYSCAPES_LABEL_IDS
        train_ids = np.full(256, 255, dtype=np.uint8)
        train_ids[: len(classes)] = np.arange(len(classes))
        colors = np.zeros((256, 3), dtype=np.uint8)
        colors[: len(classes)] = classes.colors
        return label_ids, train_ids, colors
    identity = np.arange(256, dtype=np.uint8)
    return identity, identity.copy(), classes.palette()


def cityscapes_mapping(classes: ClassSet) -> dict:
    """``mapping.json``: ``id`` (label id), ``trainId``, ``name``, ``color`` for every class and for ignore."""
    label_ids, train_ids, colors = cityscapes_tables(classes)
    ignore = classes.ignore_index
    entries = [{"index": i, "name": name, "id": int(label_ids[i]), "trainId": int(train_ids[i]),
                "color": [int(c) for c in colors[i]]} for i, name in enumerate(classes.names)]  # fmt: skip
    entries.append({"index": ignore, "name": "unlabeled" if is_cityscapes(classes) else "ignore",
                    "id": int(label_ids[ignore]), "trainId": int(train_ids[ignore]),
                    "color": [int(c) for c in colors[ignore]]})  # fmt: skip
    return {"class_set": classes.name, "official_cityscapes_ids": is_cityscapes(classes), "classes": entries}


def cityscapes_paths(root: Path, split: str, output_id: str) -> dict[str, Path]:
    """Where a sample's Cityscapes files go: ``image``, ``labelIds``, ``labelTrainIds``, ``color``."""
    image = root / "leftImg8bit" / split / CITYSCAPES_CITY / f"{output_id}_leftImg8bit.png"
    gt = root / "gtFine" / split / CITYSCAPES_CITY / f"{output_id}_gtFine_"
    return {"image": image, **{kind: Path(f"{gt}{kind}.png") for kind in ("labelIds", "labelTrainIds", "color")}}


def _cityscapes_sample(out: Path, record: dict, classes: ClassSet, tables: tuple) -> None:
    label_ids, train_ids, colors = tables
    paths = cityscapes_paths(out / FORMAT_DIRS["cityscapes"], record["split"], record["output_id"])
    _write_png_image(out / record["files"]["image"], paths["image"])
    label_map = load_label_map(out / record["files"]["label"], classes)
    atomic_write_bytes(paths["labelIds"], png_bytes(label_ids[label_map]))
    if np.array_equal(label_ids, train_ids):
        link_or_copy(paths["labelIds"], paths["labelTrainIds"])
    else:
        atomic_write_bytes(paths["labelTrainIds"], png_bytes(train_ids[label_map]))
    atomic_write_bytes(paths["color"], png_bytes(colors[label_map]))


def write_cityscapes(out: Path, records: list[dict], splits: list[str], classes: ClassSet, *, workers: int = 1) -> None:
    """``cityscapes/``: PNG images, label ids, train ids, colour maps, ``mapping.json``."""
    out = Path(out)
    tables = cityscapes_tables(classes)
    _each(lambda r: _cityscapes_sample(out, r, classes, tables), records, workers)
    mapping = json.dumps(cityscapes_mapping(classes), indent=2) + "\n"
    atomic_write_text(out / FORMAT_DIRS["cityscapes"] / "mapping.json", mapping)


# --------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------


def hf_features():
    """The ``datasets.Features`` of the hf copy."""
    import datasets

    text = datasets.Value("string")
    return datasets.Features({"id": text, "split": text, "kind": text, "image": datasets.Image(),
                              "label": datasets.Image(), "provenance": text})  # fmt: skip


def hf_rows(out: str, records: list[dict]) -> Iterator[dict]:
    """One ``datasets`` row per record (images as the VOC files' bytes; their paths are bare file names)."""
    for record in records:
        image, label = Path(out) / record["files"]["image"], Path(out) / record["files"]["label"]
        yield {"id": record["output_id"], "split": record["split"], "kind": str(record["kind"]),
               "image": {"bytes": image.read_bytes(), "path": image.name},
               "label": {"bytes": label.read_bytes(), "path": label.name},
               "provenance": json.dumps(record["provenance"], sort_keys=True)}  # fmt: skip


def hf_fingerprint(split: str, records: list[dict]) -> str:
    """16 hex digits naming a split's content: its name and its records (ids, kinds, provenance, file digests)."""
    keys = ("output_id", "kind", "provenance", "checksums")
    doc = [split, [{k: r.get(k) for k in keys} for r in records]]
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hf_split(out: Path, split: str, records: list[dict], cache: Path):
    import datasets

    features = hf_features()
    built = datasets.Dataset.from_generator(hf_rows, features=features, cache_dir=str(cache),
                                            gen_kwargs={"out": str(out), "records": records},
                                            split=datasets.NamedSplit(split))  # fmt: skip
    # The builder's fingerprint hashes its arguments (paths included): name the split by its content instead.
    return built.select_columns(list(features), new_fingerprint=hf_fingerprint(split, records))


def write_hf(out: Path, records: list[dict], splits: list[str], classes: ClassSet, *, workers: int = 1) -> None:
    """``hf/``: a ``DatasetDict`` saved with ``save_to_disk`` (see the module docstring); ``workers`` is unused."""
    try:
        import datasets
    except ImportError:
        raise InvalidInput("the hf export format needs the datasets package: pip install datasets") from None
    out = Path(out)
    scratch = out / HF_SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)
    quiet = not datasets.utils.are_progress_bars_disabled()
    if quiet:
        datasets.utils.disable_progress_bars()
    try:
        parts = {
            split: _hf_split(out, split, rs, scratch / "cache") for split, rs in _ids_by_split(records, splits).items()
        }
        datasets.DatasetDict(parts).save_to_disk(str(scratch / "hf"))
        del parts  # the memory maps of the scratch cache
        classes.save(scratch / "hf" / "classes.json")
        _swap_folder(scratch / "hf", out / FORMAT_DIRS["hf"], scratch / "old")
    finally:
        if quiet:
            datasets.utils.enable_progress_bars()
        shutil.rmtree(scratch, ignore_errors=True)


def _swap_folder(new: Path, target: Path, old: Path) -> None:
    """Put the folder ``new`` at ``target``, moving a previous ``target`` to ``old`` first (all renames)."""
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
