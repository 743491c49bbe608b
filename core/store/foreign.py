"""Datasets written by other tools: COCO, YOLO segmentation, Cityscapes, mmsegmentation and labelme.

Use these through :class:`core.store.DatasetStore` (``DatasetStore(path)`` detects the layout; ``layout=``
forces one). Nothing here ever writes into the dataset folder.

Detection, tried after SegStudio's own layouts (``voc``: ``JPEGImages/``; ``boxes_csv``: ``boxes.csv``), first
match wins, else the folder is a plain ``images`` folder:

- ``cityscapes``: a ``leftImg8bit/`` folder (``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png``, label maps
  ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``, else ``..._gtFine_labelTrainIds.png``);
- ``mmseg``: an ``img_dir/`` folder (mmsegmentation's custom layout: ``img_dir/<split>/<name>.<ext>`` and index PNGs
  ``ann_dir/<split>/<name>.png``, else the one ``ann_dir/<split>/<name>_*.png``);
- ``yolo``: an ``images/`` folder beside a ``labels/`` folder holding ``.txt`` files, at the root or one level
  down (Ultralytics: ``images/<split>/x.jpg`` + ``labels/<split>/x.txt``, or ``<split>/images`` +
  ``<split>/labels``); class names from a data YAML in the root (``data.yaml``, ``dataset.yaml``, or any
  ``*.yaml`` with ``names``);
- ``coco``: a COCO JSON (an ``"images"`` list) in ``annotations/``, in the root, or at
  ``<split>/_annotations.coco.json``; ``instances_*.json`` only when there are some; ``captions_*``,
  ``panoptic_*`` and ``person_keypoints_*`` files are never read. Image files are looked up beside the JSON, in
  the root, in ``<split>/`` and in ``images/[<split>/]``;
- ``labelme``: ``*.json`` files holding ``"shapes"`` in the root or one folder down; each names its image in
  ``imagePath`` (relative to the JSON; the embedded ``imageData`` is never used).

Sample ids are the image's path below the root (for ``yolo`` below the ``images`` folder, for ``cityscapes`` and
``mmseg`` below ``leftImg8bit``/``img_dir``) without its suffix (and without ``_leftImg8bit``); the first folder
is the split where the format has one.

Class sets. ``cityscapes``: the built-in 19 train ids (``labelIds`` go through the official table; void ids are
255) unless a ``mapping.json`` says otherwise. ``mmseg``: ``classes.json``, else ``mapping.json``, else
``class_<v>`` for every value up to the largest found in up to 64 annotation maps (a map holding a larger value is
reported when read: add a ``classes.json``). ``coco``, ``yolo`` and ``labelme``: ``classes.json`` when present
(names matched case-insensitively), else ``background`` at 0 followed by the format's classes (COCO categories by
id, YOLO ``names`` in order (else a ``classes.txt``, else ``class_<k>``), labelme labels sorted; a ``labels.txt``
as labelme2voc reads it is honoured, ``_background_`` is 0 and ``__ignore__`` 255). ``classes.json`` is
SegStudio's document or mmsegmentation's ``metainfo`` (``{"classes": [names], "palette": [...]}``).
``mapping.json`` is ``{"<value>": "<name>" or null}`` (null: void, read as 255), a list of names, a
``classes.json`` document, or a label table ``{"classes": [{"id", "trainId", "name", "color"}, ...]}`` (label id
-> train id, a negative or 255 train id is void), as cityscapesScripts lists its labels and SegStudio's
Cityscapes export writes them.

Label maps of foreign samples are derived on demand, never written anywhere; what is known about them (the
classes present) is kept in the workspace index like any label map's facts:

- ``cityscapes``/``mmseg``: the annotation PNG (through the table for ``labelIds``; values the set does not
  know make the map unusable and are reported).
- ``coco``: an image with at least one annotation (or SegStudio's ``ignore_rle``) is labelled: pixels no
  annotation covers are background 0; ``iscrowd`` regions, annotations of unknown categories and annotations
  with a box but no usable mask are 255 (unknown); then the instances are painted by decreasing area, so a small
  object on a large one stays visible. An image without annotations is unlabelled (no label map).
- ``yolo``: a non-empty label file makes the image labelled: polygons (``class x1 y1 x2 y2 ...``, normalised)
  are filled by decreasing area over background 0; box lines (``class cx cy w h``) and unknown class ids give
  255. A missing or empty label file means unlabelled. A file with a line that is neither (an odd number of
  coordinates, text, fewer than three points) is reported and the sample is unlabelled: one wrong line makes the
  rest of the file untrustworthy as a statement of what is background.
- ``labelme``: polygons, rectangles, circles and masks are drawn in file order (later shapes on top), as
  labelme's own ``labelme2voc`` does, over background 0; lines and points carry no region and are left out; an
  unknown shape type or label is 255 over the shape's extent and reported. A JSON with no region shape is
  unlabelled.

Boxes: one per COCO annotation (``bbox``; crowd ones left out), per YOLO line (polygon extent or box) and per
labelme shape (shapes sharing a ``group_id`` and label are one box). Cityscapes and mmseg have none.

Saving. The foreign annotation files are never rewritten. A saved label map goes to
``SegmentationClass/<id>.png`` and saved boxes to ``Annotations/<id>.xml`` inside the dataset (as for a plain
image folder), each previous version kept under ``.segstudio/history/``; from then on the saved file is what the
store reads for that sample, in place of the derived one. Images the annotation files do not mention (an image
without a label file, a COCO image folder's unlisted files) are listed as unlabelled samples, so that a sample
saved as a copy is found again.

Bad files never stop a dataset from opening: a broken JSON, a label file with odd tokens, a missing image, an
annotation of an unknown category are each reported in ``Dataset.problems`` and skipped.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidInput, StudioError
from core.io import voc
from core.io.images import image_size, load_label_map
from core.store import layouts
from core.store.index import file_stamp
from core.store.records import Dataset, Sample, natural_key
from core.types import IGNORE_INDEX, Box, ClassSet, voc_colormap

FOREIGN_LAYOUTS = ("cityscapes", "mmseg", "yolo", "coco", "labelme")
MAPPING_FILE = "mapping.json"
LABELME_LABELS_FILE = "labels.txt"
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
SNIFF_BYTES = 65536
SNIFF_FILES = 16  # detection reads the head of at most this many JSON files per place
MAX_PROBLEMS_PER_FILE = 20
MMSEG_SCAN = 64

# Cityscapes labelIds -> trainIds (cityscapesScripts' labels.py); ids not listed here are void (255).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
CITYSCAPES_LABEL_IDS = 34  # labelIds 0..33 exist; any other value in a labelIds map is not Cityscapes'
_UNKNOWN = -1  # in a value table: a value the class set does not know (the map is unusable)


@dataclass(eq=False)
class LabelSource:
    """Where a sample's label map comes from when it is derived from another tool's annotation.

    Attributes:
        kind: ``index_png`` (Cityscapes, mmseg), ``coco``, ``yolo`` or ``labelme``.
        path: the annotation file (shared by every sample for COCO).
        token: names this sample's part of a shared file and its version (COCO); ``""`` when ``path`` is the
            sample's own file (its content is then what identifies the version).
        lut: for ``index_png``: ``256`` int16 entries, value -> class index, 255 for void, -1 for unknown;
            ``None`` reads values as class indices, checked against the class set.
        layers: for ``coco``: ``(class index or 255, geometry)`` in painting order.
        size: ``(height, width)`` the annotation declares, checked against the image.
        context: for ``yolo``/``labelme``: what turns the file's classes into class indices.
        boxes: the boxes derived from the annotation (used unless the sample has saved boxes).
    """

    kind: str
    path: Path
    token: str = ""
    lut: np.ndarray | None = field(default=None, repr=False)
    layers: tuple = field(default=(), repr=False)
    size: tuple[int, int] | None = None
    context: Any = field(default=None, repr=False)
    boxes: tuple[Box, ...] = ()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

_MEMOS: dict[str, OrderedDict] = {}
_MEMO_LIMITS = {"json": 4, "coco": 4}  # parsed COCO files are large: keep a few; small facts: many
_MEMO_MAX = 200_000
_MEMO_LOCK = threading.Lock()


def _memo(path: Path, kind: str, compute: Callable[[], Any], extra: str = "") -> Any:
    """``compute()``, remembered for this version of ``path`` (and ``extra``: whatever else the result depends
    on), so that re-listing after a save reads nothing again."""
    stamp = file_stamp(path)
    if stamp is None:
        return compute()
    key = (str(path), stamp, extra)
    with _MEMO_LOCK:
        memo = _MEMOS.setdefault(kind, OrderedDict())
        if key in memo:
            memo.move_to_end(key)
            return memo[key]
    value = compute()
    with _MEMO_LOCK:
        memo[key] = value
        while len(memo) > _MEMO_LIMITS.get(kind, _MEMO_MAX):
            memo.popitem(last=False)
    return value


def _sniff(path: Path, size: int = SNIFF_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(size).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _is_coco_text(head: str) -> bool:
    return '"images"' in head and any(k in head for k in ('"file_name"', '"annotations"', '"categories"'))


def _load_json(path: Path) -> Any:
    def parse():
        try:
            return json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{path}: not readable JSON ({exc})") from None

    return _memo(path, "json", parse)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part in layouts.SKIPPED_DIRS for part in relative.parts[:-1])


def _images_under(folder: Path, base: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive), hidden folders and SegStudio's own folders left out."""
    if not folder.is_dir():
        return []
    base = base or folder
    return [p for p in sorted(folder.rglob("*")) if not _hidden(p.relative_to(base)) and layouts._is_image(p)]


def _own_class_set(root: Path) -> ClassSet | None:
    """The root's ``classes.json``: SegStudio's document, or mmsegmentation's ``metainfo`` shape
    (``{"classes": [names], "palette": [[r, g, b], ...]}``, as SegStudio's mmseg export writes it)."""
    path = root / layouts.CLASSES_FILE
    if not path.is_file():
        return None
    try:
        return ClassSet.load(path)
    except InvalidInput as exc:
        doc = _load_json(path)
        names = doc.get("classes") if isinstance(doc, dict) else None
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise exc from None
        palette = np.asarray(doc.get("palette") or [], dtype=np.int64)
        colors = palette if palette.shape == (len(names), 3) else voc_colormap(256)[: len(names)]
        try:
            return ClassSet(str(doc.get("name") or root.name or "custom"), tuple(names), colors,
                            ignore_index=int(doc.get("ignore_index", IGNORE_INDEX)))  # fmt: skip
        except (InvalidInput, TypeError, ValueError) as inner:
            raise InvalidInput(f"{path}: {inner}") from None


def _unique_names(names: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    seen: set[str] = set()
    for n, name in enumerate(names):
        name = str(name).strip() or f"class_{n}"
        candidate = name
        while candidate.lower() in seen:
            candidate = f"{name} ({n})" if candidate == name else f"{candidate}'"
        seen.add(candidate.lower())
        out.append(candidate)
    return tuple(out)


def _make_class_set(name: str, names: Iterable[str]) -> ClassSet:
    names = _unique_names(names)
    if len(names) > 254:
        raise InvalidInput(f"{name}: {len(names)} classes, but a label map holds at most 254 classes besides "
                           "background and ignore; give a classes.json with the ones you need")  # fmt: skip
    return ClassSet(name, names, voc_colormap(256)[: len(names)])


def _with_background(name: str, names: list[str]) -> tuple[ClassSet, int]:
    """A class set with background at 0 followed by ``names``; returns it and the shift of ``names``."""
    if names and names[0].strip().lower() in ("background", "_background_"):
        return _make_class_set(name, ["background", *names[1:]]), 0
    return _make_class_set(name, ["background", *names]), 1


def _read_mapping(root: Path) -> tuple[ClassSet, np.ndarray, np.ndarray] | None:
    """``mapping.json``: the class set and two value tables (``256`` int16: value -> class index, 255 void, -1
    unknown), one for maps of label ids and one for maps of train ids; ``None`` without the file.

    Accepted documents: ``{"<value>": "<name>" or null}`` (null: void); a list of names; a ``classes.json``
    document; or a label table ``{"classes": [{"id": <value>, "trainId": <class index, 255 or -1 void>,
    "name", "color"?}, ...]}`` as cityscapesScripts' ``labels.py`` lists them (and SegStudio's Cityscapes export
    writes them).
    """
    path = root / MAPPING_FILE
    if not path.is_file():
        return None
    doc = _load_json(path)
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if isinstance(entries, list) and entries and all(isinstance(e, dict) and "trainId" in e for e in entries):
        return _train_id_tables(path, doc, entries)
    if isinstance(entries, list):
        try:
            classes = ClassSet.from_json(doc)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc}") from None
        mapping: dict[int, str | None] = dict(enumerate(classes.names))
    elif isinstance(doc, list):
        mapping = {i: str(n) for i, n in enumerate(doc)}
    elif isinstance(doc, dict):
        mapping = {}
        for key, value in doc.items():
            try:
                value_id = int(key)
            except ValueError:
                raise InvalidInput(f"{path}: key {key!r} is not a label value; accepted: "
                                   '{"<value 0..255>": "<name>" or null}') from None  # fmt: skip
            if not 0 <= value_id <= 255:
                raise InvalidInput(f"{path}: label value {value_id} is outside 0..255")
            if isinstance(value, dict):
                value = value.get("name")
            mapping[value_id] = None if value is None else str(value)
    else:
        raise InvalidInput(f'{path}: expected {{"<value>": "<name>"}}, a list of names or a classes.json document')
    named = {v: n for v, n in mapping.items() if n is not None and v != IGNORE_INDEX}
    if not named:
        raise InvalidInput(f"{path}: names no class")
    classes = _make_class_set(root.name or "mapping", [named.get(v, f"class_{v}") for v in range(max(named) + 1)])
    lut = np.full(256, _UNKNOWN, np.int16)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for value, name in mapping.items():
        lut[value] = IGNORE_INDEX if name is None else value
    return classes, lut, lut


def _train_id_tables(path: Path, doc: dict, entries: list[dict]) -> tuple[ClassSet, np.ndarray, np.ndarray]:
    by_id = np.full(256, _UNKNOWN, np.int16)
    by_train = np.full(256, _UNKNOWN, np.int16)
    by_id[IGNORE_INDEX] = by_train[IGNORE_INDEX] = IGNORE_INDEX
    names: dict[int, str] = {}
    colors: dict[int, list[int]] = {}
    for entry in entries:
        try:
            value, train = int(entry["id"]), int(entry["trainId"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f'{path}: every entry needs integer "id" and "trainId", got {entry}') from None
        void = not 0 <= train < IGNORE_INDEX
        if 0 <= value <= 255:
            by_id[value] = IGNORE_INDEX if void else train
        if not void:
            by_train[train] = train
            names.setdefault(train, str(entry.get("name") or f"class_{train}"))
            if isinstance(entry.get("color"), list) and len(entry["color"]) == 3:
                colors.setdefault(train, entry["color"])
    if not names:
        raise InvalidInput(f"{path}: names no class (every trainId is void)")
    top = max(names)
    fallback = voc_colormap(256)
    names_list = _unique_names(names.get(t, f"class_{t}") for t in range(top + 1))
    palette = np.array([colors.get(t, fallback[t]) for t in range(top + 1)])
    name = str(doc.get("class_set") or doc.get("name") or path.parent.name or "mapping")
    return ClassSet(name, names_list, palette), by_id, by_train


def _extent_box(xs: Iterable[float], ys: Iterable[float], width: int, height: int, label: int) -> Box | None:
    """The box of the pixels whose centres the points reach (points in pixel units, integer = pixel centre),
    clipped to the image; ``None`` for the ignore class or a box outside the image."""
    xs, ys = list(xs), list(ys)
    if label == IGNORE_INDEX or not xs:
        return None
    x0, x1 = max(round(min(xs)), 0), min(round(max(xs)) + 1, width)
    y0, y1 = max(round(min(ys)), 0), min(round(max(ys)) + 1, height)
    return Box(x0, y0, x1, y1, label) if x1 > x0 and y1 > y0 else None


def _sample(root: Path, sample_id: str, image_path: Path, classes: ClassSet, problems: list[str],
            source: LabelSource | None = None, split: tuple[str, ...] = (),
            size: tuple[int, int] | None = None) -> Sample:  # fmt: skip
    """A sample whose saved label map and boxes (at the VOC places for its id) win over the derived ones."""
    sample = layouts.annotated_sample(root, sample_id, image_path, classes, problems)
    if not (root / voc.ANNOTATION_DIR / f"{sample_id}.xml").is_file():
        sample.boxes = list(source.boxes) if source is not None else []
    sample.label_source = source
    sample.split = split
    sample.size = sample.size or size
    return sample


def _add(samples: dict[str, Sample], sample: Sample, problems: list[str]) -> None:
    if sample.id in samples:
        problems.append(f"{sample.image_path}: skipped, {samples[sample.id].image_path} has the same id {sample.id!r}")
    else:
        samples[sample.id] = sample


def _dataset(root: Path, layout: str, classes: ClassSet, samples: dict[str, Sample], problems: list[str],
             watched: Iterable[Path]) -> Dataset:  # fmt: skip
    dataset = Dataset(root, layout, classes, sorted(samples.values(), key=lambda s: natural_key(s.id)), problems)
    dirs: set[Path] = {root}
    for path in watched:
        dirs.add(path)
        if path.is_relative_to(root):
            dirs.update(p for p in path.parents if p.is_relative_to(root))
    dataset._watched = sorted(dirs)  # type: ignore[attr-defined]
    return dataset


def _capped(problems: list[str], path: Path, found: list[str]) -> None:
    problems.extend(found[:MAX_PROBLEMS_PER_FILE])
    if len(found) > MAX_PROBLEMS_PER_FILE:
        problems.append(f"{path}: and {len(found) - MAX_PROBLEMS_PER_FILE} more problems like these")


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def detect(root: Path) -> str | None:
    """The foreign layout of ``root`` (see the module docstring), or ``None``."""
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "img_dir").is_dir():
        return "mmseg"
    if _yolo_roots(root, need_labels=True) or (_yolo_yaml(root) is not None and _yolo_roots(root)):
        return "yolo"
    if _coco_files(root):
        return "coco"
    if _labelme_candidates(root, first_only=True):
        return "labelme"
    return None


# --------------------------------------------------------------------------------------------
# Cityscapes and mmsegmentation: index PNGs
# --------------------------------------------------------------------------------------------


def _cityscapes_lut(train_ids: bool) -> np.ndarray:
    lut = np.full(256, _UNKNOWN, np.int16)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    if train_ids:
        lut[: len(CITYSCAPES_TRAIN_IDS)] = np.arange(len(CITYSCAPES_TRAIN_IDS))
    else:
        lut[:CITYSCAPES_LABEL_IDS] = IGNORE_INDEX
        for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
            lut[label_id] = train_id
    return lut


def _read_cityscapes(root: Path) -> Dataset:
    mapping = _read_mapping(root)
    if mapping is not None:
        classes, by_id, by_train = mapping
        luts = {False: by_id, True: by_train}
    else:
        classes = ClassSet.builtin("cityscapes")
        luts = {False: _cityscapes_lut(False), True: _cityscapes_lut(True)}
    left, gt = root / "leftImg8bit", root / "gtFine"
    problems: list[str] = []
    samples: dict[str, Sample] = {}
    watched: set[Path] = {left, gt}
    for image_path in _images_under(left):
        rel = image_path.relative_to(left)
        stem = image_path.stem
        name = stem[: -len("_leftImg8bit")] if stem.endswith("_leftImg8bit") else stem
        sample_id = (rel.parent / name).as_posix()
        watched.update((image_path.parent, gt / rel.parent))
        source = None
        for suffix, train_ids in (("_gtFine_labelIds.png", False), ("_gtFine_labelTrainIds.png", True)):
            label = gt / rel.parent / f"{name}{suffix}"
            if label.is_file():
                source = LabelSource("index_png", label, lut=luts[train_ids])
                break
        split = (rel.parts[0],) if len(rel.parts) > 1 else ()
        _add(samples, _sample(root, sample_id, image_path, classes, problems, source, split=split), problems)
    return _dataset(root, "cityscapes", classes, samples, problems, watched)


def _mmseg_annotation(ann_folder: Path, name: str, listing: dict[Path, list[str]]) -> Path | None:
    exact = ann_folder / f"{name}.png"
    if exact.is_file():
        return exact
    if ann_folder not in listing:
        listing[ann_folder] = sorted(os.listdir(ann_folder)) if ann_folder.is_dir() else []
    matches = [n for n in listing[ann_folder] if n.startswith(f"{name}_") and n.lower().endswith(".png")]
    return ann_folder / matches[0] if len(matches) == 1 else None


def _scan_values(paths: list[Path]) -> int:
    """The largest class value (255 left out) in up to :data:`MMSEG_SCAN` evenly spread maps; -1 when none."""
    raw = _raw_class_set()
    if len(paths) > MMSEG_SCAN:
        paths = [paths[round(i * (len(paths) - 1) / (MMSEG_SCAN - 1))] for i in range(MMSEG_SCAN)]
    top = -1
    for path in paths:

        def scan(path=path) -> int:
            try:
                values = np.unique(load_label_map(path, raw))
            except StudioError:
                return -1  # reported when the map is read
            values = values[values != IGNORE_INDEX]
            return int(values.max()) if values.size else -1

        top = max(top, _memo(path, "max-value", scan))
    return top


def _read_mmseg(root: Path) -> Dataset:
    img_dir, ann_dir = root / "img_dir", root / "ann_dir"
    problems: list[str] = []
    listing: dict[Path, list[str]] = {}
    found: list[tuple[str, Path, Path | None, tuple[str, ...]]] = []
    watched: set[Path] = {img_dir, ann_dir}
    for image_path in _images_under(img_dir):
        rel = image_path.relative_to(img_dir)
        watched.update((image_path.parent, ann_dir / rel.parent))
        annotation = _mmseg_annotation(ann_dir / rel.parent, image_path.stem, listing)
        found.append(
            (rel.with_suffix("").as_posix(), image_path, annotation, (rel.parts[0],) if len(rel.parts) > 1 else ())
        )
    lut = None
    own = _own_class_set(root)
    mapping = _read_mapping(root) if own is None else None
    if own is not None:
        classes = own
    elif mapping is not None:
        classes, lut, _ = mapping
    else:
        top = _scan_values([a for _, _, a, _ in found if a is not None])
        classes = _make_class_set(root.name or "mmseg", [f"class_{v}" for v in range(max(top, 0) + 1)])
    samples: dict[str, Sample] = {}
    for sample_id, image_path, annotation, split in found:
        source = LabelSource("index_png", annotation, lut=lut) if annotation is not None else None
        _add(samples, _sample(root, sample_id, image_path, classes, problems, source, split=split), problems)
    return _dataset(root, "mmseg", classes, samples, problems, watched)


_RAW: list[ClassSet] = []


def _raw_class_set() -> ClassSet:
    """A set accepting every 8-bit value, to read index PNGs before their values are translated."""
    if not _RAW:
        _RAW.append(ClassSet("raw", tuple(f"v{i}" for i in range(255)), np.zeros((255, 3), np.uint8)))
    return _RAW[0]


def _render_index_png(source: LabelSource, classes: ClassSet, hw: tuple[int, int]) -> np.ndarray:
    if source.lut is None:
        return load_label_map(source.path, classes, expected_size=hw)
    raw = load_label_map(source.path, _raw_class_set(), expected_size=hw)
    mapped = source.lut[raw]
    if (mapped == _UNKNOWN).any():
        values = np.unique(raw[mapped == _UNKNOWN])
        shown = ", ".join(str(int(v)) for v in values[:12])
        raise InvalidInput(f"{source.path}: label values {shown} are not in the table for class set {classes.name!r}; "
                           f"add them to {MAPPING_FILE} (null for void)")  # fmt: skip
    return mapped.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# YOLO segmentation
# --------------------------------------------------------------------------------------------


def _yolo_roots(root: Path, need_labels: bool = False) -> list[Path]:
    """``images`` folders at the root or one level down that have a ``labels`` sibling (holding a ``.txt``
    when ``need_labels``)."""
    candidates = [root / "images"] + sorted(
        p / "images" for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    out = []
    for images in candidates:
        labels = images.parent / "labels"
        if not images.is_dir() or images.parent.name in layouts.SKIPPED_DIRS:
            continue
        if labels.is_dir() and (not need_labels or next(labels.rglob("*.txt"), None) is not None):
            out.append(images)
        elif not need_labels and images.parent == root:
            out.append(images)
    return out


def _yolo_yaml(root: Path) -> Path | None:
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        if "names" in _sniff(path):
            return path
    return None


def _yolo_names(root: Path, path: Path | None, problems: list[str]) -> tuple[list[str] | None, Path | None]:
    """Class names and the file they come from: the data YAML, else a ``classes.txt`` (one name a line) in the
    root or ``labels/``."""
    if path is None:
        for txt in (root / "classes.txt", root / "labels" / "classes.txt"):
            if txt.is_file():
                names = [ln.strip() for ln in txt.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
                return [n for n in names if n] or None, txt
        return None, None
    return _yaml_names(path, problems), path


def _yaml_names(path: Path, problems: list[str]) -> list[str] | None:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{path}: not readable YAML ({str(exc).splitlines()[0]}); class names unknown")
        return None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            by_id = None
        if by_id and min(by_id) >= 0:
            return [by_id.get(i, f"class_{i}") for i in range(max(by_id) + 1)]
    problems.append(f"{path}: no usable 'names' (a list, or a mapping of class id to name); class names unknown")
    return None


@dataclass(frozen=True)
class _YoloLine:
    cls: int
    kind: str  # "poly" or "box"
    coords: tuple[float, ...]  # normalised: x1 y1 x2 y2 ... (poly) or cx cy w h (box)


def _parse_yolo(path: Path) -> tuple[_YoloLine, ...] | str:
    """The lines of a YOLO label file, or why it cannot be read (a message)."""

    def parse() -> tuple[_YoloLine, ...] | str:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            return f"{path}: unreadable label file ({exc}); sample left unlabelled"
        lines = []
        for number, line in enumerate(text.splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                values = [float(t) for t in tokens]
            except ValueError:
                return f"{path}:{number}: not numbers ({line.strip()[:60]!r}); sample left unlabelled"
            cls, coords = values[0], values[1:]
            if not all(math.isfinite(v) for v in values) or cls < 0 or cls != int(cls):
                return f"{path}:{number}: class {tokens[0]!r} is not a class id; sample left unlabelled"
            if len(coords) == 4:
                kind = "box"
            elif len(coords) >= 6 and len(coords) % 2 == 0:
                kind = "poly"
            else:
                return (f"{path}:{number}: {len(coords)} coordinates; expected 4 (a box) or an even number of at "
                        "least 6 (a polygon); sample left unlabelled")  # fmt: skip
            if min(coords) < -0.01 or max(coords) > 1.01:
                return f"{path}:{number}: coordinates outside 0..1 (not normalised); sample left unlabelled"
            lines.append(_YoloLine(int(cls), kind, tuple(min(max(v, 0.0), 1.0) for v in coords)))
        return tuple(lines)

    return _memo(path, "yolo", parse)


@dataclass(frozen=True)
class _YoloContext:
    index: dict  # YOLO class id -> class index (ids missing here are unknown: 255)


def _yolo_split(images_dir: Path, rel: Path, root: Path) -> tuple[str, ...]:
    if images_dir.parent != root:
        return (images_dir.parent.name,)
    return (rel.parts[0],) if len(rel.parts) > 1 else ()


def _read_yolo(root: Path) -> Dataset:
    problems: list[str] = []
    yaml_path = _yolo_yaml(root)
    names, names_path = _yolo_names(root, yaml_path, problems)
    found = []
    watched: set[Path] = {names_path} if names_path else set()
    for images_dir in _yolo_roots(root):
        labels_dir = images_dir.parent / "labels"
        watched.update((images_dir, labels_dir))
        for image_path in _images_under(images_dir):
            rel = image_path.relative_to(images_dir)
            label_path = labels_dir / rel.with_suffix(".txt")
            watched.update((image_path.parent, label_path.parent))
            parsed = _parse_yolo(label_path) if label_path.is_file() else ()
            if isinstance(parsed, str):
                problems.append(parsed)
                parsed = ()
            sample_id = (images_dir.parent.relative_to(root) / rel.with_suffix("")).as_posix()
            found.append((sample_id, image_path, label_path, parsed, _yolo_split(images_dir, rel, root)))
    top = max((line.cls for *_, parsed, _ in found for line in parsed), default=-1)
    own = _own_class_set(root)
    index: dict[int, int] = {}
    if own is not None and names is not None:
        classes = own
        for k, name in enumerate(names):
            try:
                index[k] = own.index_of(name)
            except InvalidInput:
                problems.append(
                    f"{names_path}: class {name!r} is not in {layouts.CLASSES_FILE}; its regions are unknown (255)"
                )
    elif own is not None:
        classes = own
        shift = 1 if own.names[0].lower() == "background" else 0
        index = {k: k + shift for k in range(len(own) - shift)}
    else:
        names = names or [f"class_{k}" for k in range(top + 1)]
        classes, shift = _with_background(root.name or "yolo", names)
        index = {k: k + shift for k in range(len(names))}
    context = _YoloContext(index)
    samples: dict[str, Sample] = {}
    for sample_id, image_path, label_path, parsed, split in found:
        source = _yolo_source(label_path, parsed, context, image_path, problems) if parsed else None
        _add(samples, _sample(root, sample_id, image_path, classes, problems, source, split), problems)
    return _dataset(root, "yolo", classes, samples, problems, watched)


def _yolo_points(line: _YoloLine, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (integer = pixel centre, as Ultralytics fills them) of a polygon or box line."""
    c = np.asarray(line.coords, dtype=np.float64)
    if line.kind == "box":
        cx, cy, w, h = c
        xs = np.array([cx - w / 2, cx + w / 2]) * width
        ys = np.array([cy - h / 2, cy + h / 2]) * height
        return xs, ys
    return c[0::2] * width, c[1::2] * height


def _yolo_source(label_path: Path, parsed: tuple[_YoloLine, ...], context: _YoloContext, image_path: Path,
                 problems: list[str]) -> LabelSource:  # fmt: skip
    unknown = sorted({line.cls for line in parsed if line.cls not in context.index})
    if unknown:
        problems.append(f"{label_path}: class ids {', '.join(map(str, unknown))} are not in the class set "
                        f"({len(context.index)} classes); their regions are unknown (255)")  # fmt: skip
    return LabelSource("yolo", label_path, context=context, boxes=tuple(_yolo_boxes(parsed, context, image_path)))


def _yolo_boxes(parsed: tuple[_YoloLine, ...], context: _YoloContext, image_path: Path) -> list[Box]:
    try:
        height, width = _memo(image_path, "size", lambda: image_size(image_path))
    except StudioError:
        return []  # the image is reported when it is read
    boxes = []
    for line in parsed:
        if line.cls not in context.index:
            continue
        label = context.index[line.cls]
        if line.kind == "box":  # box corners are pixel edges, not centres
            cx, cy, w, h = line.coords
            try:
                box = Box.from_floats((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                      (cy + h / 2) * height, label).clip(width, height)  # fmt: skip
            except InvalidInput:
                continue
        else:
            box = _extent_box([x * width for x in line.coords[0::2]], [y * height for y in line.coords[1::2]],
                              width, height, label)  # fmt: skip
        if box is not None:
            boxes.append(box)
    return boxes


def _polygon_area(xs: np.ndarray, ys: np.ndarray) -> float:
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def _render_yolo(source: LabelSource, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    parsed = _parse_yolo(source.path)
    if isinstance(parsed, str):
        raise InvalidInput(parsed)
    if not parsed:
        raise InvalidInput(f"{source.path}: the label file is empty now; the sample is unlabelled")
    height, width = hw
    out = np.zeros(hw, np.uint8)
    index = source.context.index
    unknown = [(IGNORE_INDEX, line) for line in parsed if line.kind == "box" or line.cls not in index]
    known = [(index[line.cls], line) for line in parsed if line.kind == "poly" and line.cls in index]
    known.sort(key=lambda item: -_polygon_area(*_yolo_points(item[1], width, height)))
    for value, line in unknown + known:
        xs, ys = _yolo_points(line, width, height)
        if line.kind == "box":
            x0, x1 = max(math.floor(xs[0]), 0), min(math.ceil(xs[1]), width)
            y0, y1 = max(math.floor(ys[0]), 0), min(math.ceil(ys[1]), height)
            out[y0:y1, x0:x1] = IGNORE_INDEX
            continue
        points = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)
        cv2.fillPoly(out, [points], int(value), lineType=cv2.LINE_8, shift=4)
    return out


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------

_COCO_SKIPPED_PREFIXES = ("captions_", "panoptic_", "person_keypoints_")
_COCO_GENERIC_STEMS = ("_annotations.coco", "annotations", "instances", "coco", "_annotations")


def _coco_files(root: Path) -> list[Path]:
    candidates: list[Path] = []
    if (root / "annotations").is_dir():
        candidates += sorted((root / "annotations").glob("*.json"))[:SNIFF_FILES]
    at_root = sorted(p for p in root.glob("*.json") if p.name not in (layouts.CLASSES_FILE, MAPPING_FILE))
    candidates += at_root[:SNIFF_FILES]  # a folder of many JSONs is labelme's, not COCO's
    candidates += sorted(root.glob("*/_annotations.coco.json"))
    coco = [p for p in candidates if not p.name.startswith(_COCO_SKIPPED_PREFIXES) and _is_coco_text(_sniff(p))]
    instances = [p for p in coco if p.name.startswith("instances_")]
    return instances or coco


def _coco_split(root: Path, path: Path) -> str:
    stem = path.name[: -len(".json")]
    if stem.startswith("instances_"):
        return stem[len("instances_") :]
    if stem.lower() in _COCO_GENERIC_STEMS:
        return path.parent.name if path.parent not in (root, root / "annotations") else ""
    return stem


def _coco_image_path(root: Path, json_path: Path, file_name: str, split: str, rule: list[int]) -> Path | None:
    name = file_name.replace("\\", "/")
    candidates = [json_path.parent / name, root / name, root / split / name if split else None,
                  root / "images" / split / name if split else None, root / "images" / name,
                  json_path.parent.parent / name]  # fmt: skip
    order = [rule[0], *(i for i in range(len(candidates)) if i != rule[0])]
    for i in order:
        path = candidates[i]
        if path is not None and path.is_file():
            rule[0] = i
            return path
    return None


def _rle_from(segmentation: dict, height: int, width: int) -> dict | None:
    """A compressed RLE (``counts`` bytes) from a COCO RLE dict, or ``None`` when it is malformed."""
    from pycocotools import mask as mask_utils

    size = segmentation.get("size")
    counts = segmentation.get("counts")
    if not (isinstance(size, list | tuple) and len(size) == 2 and [int(size[0]), int(size[1])] == [height, width]):
        return None
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts.encode("ascii")}
    if isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts):
        if sum(counts) != height * width:
            return None
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return None


def _coco_geometry(ann: dict, height: int, width: int) -> tuple[str, Any] | None:
    """``("poly", [[x, y, ...], ...])`` or ``("rle", rle)`` from an annotation's segmentation, or ``None``."""
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        polygons = [[float(v) for v in p] for p in seg if len(p) >= 6 and len(p) % 2 == 0]
        if polygons and all(math.isfinite(v) for p in polygons for v in p):
            return "poly", polygons
        return None
    if isinstance(seg, dict):
        rle = _rle_from(seg, height, width)
        return ("rle", rle) if rle is not None else None
    return None


def _coco_bbox(ann: dict) -> tuple[float, float, float, float] | None:
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4:
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return None
        if all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0:
            return x, y, w, h
    return None


def _coco_categories(root: Path, docs: list[tuple[Path, dict]], own: ClassSet | None,
                     problems: list[str]) -> tuple[ClassSet, dict[Path, dict[int, int]]]:  # fmt: skip
    """The class set and, per file, category id -> class index (unknown categories are left out)."""
    per_file: dict[Path, dict[int, str]] = {}
    ordered: list[tuple[int, str]] = []
    for path, doc in docs:
        names: dict[int, str] = {}
        for cat in doc.get("categories") or []:
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
                problems.append(f"{path}: category entry {str(cat)[:60]} has no integer id; skipped")
                continue
            names[cat["id"]] = str(cat.get("name") or f"category_{cat['id']}")
        per_file[path] = names
        ordered += sorted(names.items())
    if own is None:
        unique: list[str] = []
        for _, name in sorted(ordered, key=lambda item: item[0]):
            if name.lower() not in (n.lower() for n in unique) and name.lower() != "background":
                unique.append(name)
        classes = _make_class_set(root.name or "coco", ["background", *unique])
    else:
        classes = own
    mapping: dict[Path, dict[int, int]] = {}
    for path, names in per_file.items():
        mapping[path] = {}
        for cat_id, name in names.items():
            try:
                mapping[path][cat_id] = classes.index_of(name)
            except InvalidInput:
                problems.append(f"{path}: category {name!r} (id {cat_id}) is not in {layouts.CLASSES_FILE}; its "
                                "regions are unknown (255)")  # fmt: skip
    return classes, mapping


def _read_coco(root: Path) -> Dataset:
    files = _coco_files(root)
    if not files:
        raise InvalidInput(f"{root}: no COCO JSON found (looked for annotations/*.json, *.json and "
                           "*/_annotations.coco.json holding an \"images\" list)")  # fmt: skip
    problems: list[str] = []
    docs = []
    for path in files:
        try:
            doc = _load_json(path)
        except InvalidInput as exc:
            problems.append(str(exc))
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            problems.append(f'{path}: not a COCO file (no "images" list); skipped')
            continue
        docs.append((path, doc))
    classes, category_index = _coco_categories(root, docs, _own_class_set(root), problems)
    samples: dict[str, Sample] = {}
    watched: set[Path] = set(files)
    image_dirs: set[Path] = set()
    for path, doc in docs:
        _read_coco_file(root, path, doc, classes, category_index[path], samples, problems, image_dirs)
    watched |= image_dirs
    listed = {s.image_path for s in samples.values()}
    for folder in sorted(image_dirs):  # images the files do not mention: unlabelled samples
        for image_path in sorted(folder.iterdir()):
            if image_path not in listed and layouts._is_image(image_path) and image_path.is_relative_to(root):
                sample_id = image_path.relative_to(root).with_suffix("").as_posix()
                if sample_id not in samples:
                    samples[sample_id] = _sample(root, sample_id, image_path, classes, problems)
    return _dataset(root, "coco", classes, samples, problems, watched)


@dataclass(frozen=True)
class _CocoImage:
    image_id: Any
    file_name: str
    image_path: Path | None  # where it was found when the file was parsed (checked again on every listing)
    size: tuple[int, int] | None
    source: LabelSource | None
    problems: tuple[str, ...]


def _read_coco_file(root: Path, path: Path, doc: dict, classes: ClassSet, index: dict[int, int],
                    samples: dict[str, Sample], problems: list[str], image_dirs: set[Path]) -> None:  # fmt: skip
    extra = f"{root}|{sorted(index.items())}"
    images, file_problems = _memo(path, "coco", lambda: _parse_coco_file(root, path, doc, index), extra)
    split = _coco_split(root, path)
    rule = [0]
    found = list(file_problems)
    for image in images:
        found.extend(image.problems)
        image_path = image.image_path
        if image_path is None or not image_path.is_file():
            image_path = _coco_image_path(root, path, image.file_name, split, rule)
        if image_path is None:
            found.append(f"{path}: image {image.file_name!r} (id {image.image_id}) not found; skipped")
            continue
        if image.size is None:
            continue  # no usable size: reported with the image's problems
        image_dirs.add(image_path.parent)
        sample_id = _coco_sample_id(root, image_path, image)
        sample = _sample(root, sample_id, image_path, classes, problems, image.source, (split,) if split else (),
                         image.size)  # fmt: skip
        _add(samples, sample, found)
    _capped(problems, path, found)


def _coco_sample_id(root: Path, image_path: Path, image: _CocoImage) -> str:
    if image_path.is_relative_to(root):
        return image_path.relative_to(root).with_suffix("").as_posix()
    # an image outside the dataset folder: its id must still name a place inside it (where its saves go)
    parts = [p for p in Path(image.file_name.replace("\\", "/")).with_suffix("").parts
             if p not in ("/", "..", ".") and not p.endswith(":")]  # fmt: skip
    return "/".join(parts) or f"image_{image.image_id}"


def _parse_coco_file(root: Path, path: Path, doc: dict, index: dict[int, int]) -> tuple[list[_CocoImage], list[str]]:
    """The images of one COCO file with their label sources, and the file's own problems (remembered by the
    file's version: a re-listing does not parse it again)."""
    found: list[str] = []
    split = _coco_split(root, path)
    stamp = file_stamp(path) or "-"
    by_image: dict[Any, list[dict]] = {}
    for n, ann in enumerate(doc.get("annotations") or []):
        if not isinstance(ann, dict) or "image_id" not in ann:
            found.append(f"{path}: annotation {n} has no image_id; skipped")
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    rule = [0]
    seen_ids = set()
    images = []
    for entry in doc["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or "id" not in entry:
            found.append(f"{path}: image entry {str(entry)[:80]} has no id or file_name; skipped")
            continue
        seen_ids.add(entry["id"])
        file_name = entry["file_name"]
        image_path = _coco_image_path(root, path, file_name, split, rule)
        why = "the file gives none and the image is missing"
        try:
            height, width = int(entry.get("height") or 0), int(entry.get("width") or 0)
            if (height <= 0 or width <= 0) and image_path is not None:
                height, width = _memo(image_path, "size", lambda p=image_path: image_size(p))
        except (StudioError, TypeError, ValueError) as exc:
            height = width = 0
            why = str(exc)
        if height <= 0 or width <= 0:
            message = f"{path}: image {file_name!r} (id {entry['id']}): no usable height/width ({why}); skipped"
            images.append(_CocoImage(entry["id"], file_name, image_path, None, None, (message,)))
            continue
        entry_problems: list[str] = []
        source = _coco_source(path, entry, by_image.get(entry["id"], []), index, height, width, entry_problems, stamp)
        images.append(_CocoImage(entry["id"], file_name, image_path, (height, width), source, tuple(entry_problems)))
    orphans = [k for k in by_image if k not in seen_ids]
    if orphans:
        found.append(f"{path}: {sum(len(by_image[k]) for k in orphans)} annotations refer to image ids not in "
                     f"\"images\" ({', '.join(map(str, orphans[:5]))}); skipped")  # fmt: skip
    return images, found


def _coco_source(path: Path, entry: dict, anns: list[dict], index: dict[int, int], height: int, width: int,
                 found: list[str], stamp: str) -> LabelSource | None:  # fmt: skip
    where = f"{path}: image {entry['file_name']!r}"
    unknown_layers: list = []
    known: list[tuple[float, int, tuple[str, Any]]] = []
    boxes: list[Box] = []
    ignore = entry.get("ignore_rle")  # SegStudio's exports: the label map's ignore pixels
    if isinstance(ignore, dict):
        rle = _rle_from(ignore, height, width)
        if rle is None:
            found.append(f"{where}: malformed ignore_rle; sample left unlabelled")
            return None
        unknown_layers.append((IGNORE_INDEX, ("rle", rle)))
    for ann in anns:
        cat = ann.get("category_id")
        label = index.get(cat) if isinstance(cat, int) else None
        if label is None:
            found.append(
                f"{where}: annotation {ann.get('id')} has unknown category id {cat!r}; its region is unknown (255)"
            )
        geometry = _coco_geometry(ann, height, width)
        bbox = _coco_bbox(ann)
        if geometry is None and bbox is None:
            found.append(f"{where}: annotation {ann.get('id')} has neither a usable segmentation nor a bbox; the "
                         "sample is left unlabelled")  # fmt: skip
            return None
        if geometry is None and ann.get("segmentation") not in (None, [], {}):
            found.append(f"{where}: annotation {ann.get('id')} has a malformed segmentation; its box is unknown (255)")
        crowd = bool(ann.get("iscrowd"))
        if geometry is None or crowd or label is None:
            unknown_layers.append((IGNORE_INDEX, geometry or ("box", bbox)))
        else:
            area = ann.get("area")
            area = float(area) if isinstance(area, int | float) else (bbox[2] * bbox[3] if bbox else 0.0)
            known.append((area, label, geometry))
        if bbox is None and geometry is not None:
            bbox = _geometry_bbox(geometry)
        if label is not None and not crowd and bbox is not None:
            x, y, w, h = bbox  # half-open pixel box, rounded outwards and clipped (a box outside adds none)
            x0, y0 = max(math.floor(x), 0), max(math.floor(y), 0)
            x1, y1 = min(math.ceil(x + w), width), min(math.ceil(y + h), height)
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0, y0, x1, y1, label))
    if not anns and ignore is None:
        return None
    known.sort(key=lambda item: -item[0])
    layers = tuple(unknown_layers) + tuple((label, geometry) for _, label, geometry in known)
    return LabelSource("coco", path, token=f"{stamp}#{entry['id']}", layers=layers, size=(height, width),
                       boxes=tuple(boxes))  # fmt: skip


def _geometry_bbox(geometry: tuple[str, Any]) -> tuple[float, float, float, float] | None:
    from pycocotools import mask as mask_utils

    kind, data = geometry
    if kind == "poly":
        xs = [v for p in data for v in p[0::2]]
        ys = [v for p in data for v in p[1::2]]
        x, y = min(xs), min(ys)
        w, h = max(xs) - x, max(ys) - y
    else:
        x, y, w, h = (float(v) for v in mask_utils.toBbox(data))
    return (x, y, w, h) if w > 0 and h > 0 else None


def _render_coco(source: LabelSource, hw: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if source.size is not None and tuple(source.size) != tuple(hw):
        raise InvalidInput(f"{source.path}: the annotation says the image is {source.size[1]}x{source.size[0]} (W x H) "
                           f"but it is {hw[1]}x{hw[0]}; its masks cannot be placed")  # fmt: skip
    height, width = hw
    out = np.zeros(hw, np.uint8)
    for value, (kind, data) in source.layers:
        if kind == "box":
            x, y, w, h = data
            x0, y0 = max(math.floor(x), 0), max(math.floor(y), 0)
            out[y0 : min(math.ceil(y + h), height), x0 : min(math.ceil(x + w), width)] = value
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(data, height, width)) if kind == "poly" else data
        with warnings.catch_warnings():  # pycocotools' decode warns under numpy 2 (copy keyword); harmless
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rle)
        out[decoded.astype(bool)] = value
    return out


# --------------------------------------------------------------------------------------------
# labelme
# --------------------------------------------------------------------------------------------

_REGION_SHAPES = ("polygon", "rectangle", "circle", "mask")
_NO_REGION_SHAPES = ("line", "linestrip", "point", "points")
_BACKGROUND_LABELS = ("_background_", "background")
_IGNORE_LABEL = "__ignore__"


def _labelme_candidates(root: Path, first_only: bool = False) -> list[Path]:
    """``*.json`` files in the root or one folder down that hold ``"shapes"``."""
    out = []
    candidates = [*sorted(root.glob("*.json")), *sorted(root.glob("*/*.json"))]
    candidates = [p for p in candidates if p.name not in (layouts.CLASSES_FILE, MAPPING_FILE)]
    for path in candidates[: SNIFF_FILES if first_only else None]:
        if _hidden(path.relative_to(root)):
            continue
        if '"shapes"' in _sniff(path, 8192):
            out.append(path)
            if first_only:
                break
    return out


@dataclass(frozen=True)
class _Shape:
    label: str
    kind: str
    points: tuple[tuple[float, float], ...]
    group: Any = None
    mask: str | None = None


@dataclass(frozen=True)
class _LabelmeFile:
    image: str
    height: int | None
    width: int | None
    shapes: tuple[_Shape, ...]


def _parse_labelme(path: Path) -> _LabelmeFile | str:
    def parse() -> _LabelmeFile | str:
        try:
            doc = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"{path}: not readable JSON ({exc}); skipped"
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            return f'{path}: not a labelme file (no "shapes" list); skipped'
        shapes = []
        for n, raw in enumerate(doc["shapes"]):
            try:
                label = str(raw["label"]).strip()
                kind = str(raw.get("shape_type") or "polygon")
                points = tuple((float(x), float(y)) for x, y in raw.get("points") or [])
                if not all(math.isfinite(v) for p in points for v in p):
                    raise ValueError("points are not finite")
                group = raw.get("group_id")
                shapes.append(_Shape(label, kind, points, tuple(group) if isinstance(group, list) else group,
                                     raw.get("mask") if isinstance(raw.get("mask"), str) else None))  # fmt: skip
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                return f"{path}: shape {n} is malformed ({exc!s}); skipped, the image is unlabelled"
        image = doc.get("imagePath")
        height, width = doc.get("imageHeight"), doc.get("imageWidth")
        return _LabelmeFile(str(image) if isinstance(image, str) else "", height if isinstance(height, int) else None,
                            width if isinstance(width, int) else None, tuple(shapes))  # fmt: skip

    return _memo(path, "labelme", parse)


@dataclass(frozen=True)
class _LabelmeContext:
    index: dict  # label (lower case) -> class index, or 255 for ignored labels


def _labelme_image(path: Path, image: str) -> Path | None:
    if image:
        candidate = path.parent / image.replace("\\", "/")
        if candidate.is_file():
            return candidate
    for suffix in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".JPG", ".PNG", ".JPEG"):
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _labelme_classes(root: Path, labels: list[str], problems: list[str]) -> tuple[ClassSet, _LabelmeContext]:
    own = _own_class_set(root)
    labels_file = root / LABELME_LABELS_FILE
    index: dict[str, int] = {_IGNORE_LABEL: IGNORE_INDEX}
    if own is None and labels_file.is_file():
        lines = [ln.strip() for ln in labels_file.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
        names = [ln for ln in lines if ln and ln != _IGNORE_LABEL]
        if names and names[0].lower() in _BACKGROUND_LABELS:
            names = names[1:]
        own = _make_class_set(root.name or "labelme", ["background", *names])
    if own is None:
        present = sorted({lb for lb in labels if lb.lower() not in _BACKGROUND_LABELS and lb != _IGNORE_LABEL},
                         key=natural_key)  # fmt: skip
        own = _make_class_set(root.name or "labelme", ["background", *present])
    for name in own.names:
        index[name.lower()] = own.index_of(name)
    if own.names[0].lower() == "background":
        for alias in _BACKGROUND_LABELS:
            index.setdefault(alias, 0)
    missing = sorted({lb for lb in labels if lb.lower() not in index})
    if missing:
        problems.append(f"{root}: labels {', '.join(map(repr, missing[:10]))} are not in the class set; their "
                        "shapes are unknown (255)")  # fmt: skip
    return own, _LabelmeContext(index)


def _read_labelme(root: Path) -> Dataset:
    problems: list[str] = []
    parsed = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root)
        if _hidden(rel) or (len(rel.parts) == 1 and path.name in (layouts.CLASSES_FILE, MAPPING_FILE)):
            continue
        result = _parse_labelme(path)
        if isinstance(result, str):
            problems.append(result)
            continue
        image_path = _labelme_image(path, result.image)
        if image_path is None:
            problems.append(f"{path}: image {result.image!r} not found (the embedded imageData is not used); skipped")
            continue
        parsed.append((path, result, image_path))
    classes, context = _labelme_classes(root, [s.label for _, r, _ in parsed for s in r.shapes], problems)
    samples: dict[str, Sample] = {}
    for path, result, image_path in parsed:
        anchor = image_path if image_path.is_relative_to(root) else path
        sample_id = anchor.relative_to(root).with_suffix("").as_posix()
        source = _labelme_source(path, result, context, image_path, problems)
        sample = _sample(root, sample_id, image_path, classes, problems, source, size=source and source.size)
        _add(samples, sample, problems)
    listed = {s.image_path for s in samples.values()}
    for image_path in _images_under(root):  # images without a JSON: unlabelled samples
        if image_path not in listed:
            sample_id = image_path.relative_to(root).with_suffix("").as_posix()
            _add(samples, _sample(root, sample_id, image_path, classes, problems), problems)
    dataset = _dataset(root, "labelme", classes, samples, problems, ())
    dataset._watched = None  # type: ignore[attr-defined]  # a free-form folder: watch every folder
    return dataset


def _labelme_source(path: Path, parsed: _LabelmeFile, context: _LabelmeContext, image_path: Path,
                    problems: list[str]) -> LabelSource | None:  # fmt: skip
    regions = [s for s in parsed.shapes if s.kind not in _NO_REGION_SHAPES]
    if not regions:
        return None
    if parsed.height and parsed.width:
        height, width = parsed.height, parsed.width
    else:
        try:
            height, width = _memo(image_path, "size", lambda: image_size(image_path))
        except StudioError:
            return LabelSource("labelme", path, context=context)  # the image is reported when it is read
    for shape in regions:
        if shape.kind not in _REGION_SHAPES:
            problems.append(
                f"{path}: shape type {shape.kind!r} ({shape.label}) is not read; its extent is unknown (255)"
            )
    groups: dict[Any, list[_Shape]] = {}
    for n, shape in enumerate(regions):
        key = (shape.label, shape.group) if shape.group is not None else n
        groups.setdefault(key, []).append(shape)
    boxes = []
    for shapes in groups.values():
        label = context.index.get(shapes[0].label.lower(), IGNORE_INDEX)
        xs = [x for s in shapes for x, _ in _shape_extent(s)]
        ys = [y for s in shapes for _, y in _shape_extent(s)]
        box = _extent_box(xs, ys, width, height, label)
        if box is not None:
            boxes.append(box)
    return LabelSource("labelme", path, size=(height, width), context=context, boxes=tuple(boxes))


def _shape_extent(shape: _Shape) -> list[tuple[float, float]]:
    if shape.kind == "circle" and len(shape.points) >= 2:
        (cx, cy), (px, py) = shape.points[:2]
        r = math.hypot(cx - px, cy - py)
        return [(cx - r, cy - r), (cx + r, cy + r)]
    return list(shape.points)


def _draw_shape(shape: _Shape, hw: tuple[int, int]) -> np.ndarray | None:
    """The shape's pixels as ``H x W bool``, drawn as labelme's ``shape_to_mask`` does; ``None`` when the shape
    type is not a region this reader draws."""
    from PIL import Image, ImageDraw

    height, width = hw
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    points = [tuple(p) for p in shape.points]
    if shape.kind == "polygon" and len(points) >= 3:
        draw.polygon(points, outline=1, fill=1)
    elif shape.kind == "rectangle" and len(points) >= 2:
        (x0, y0), (x1, y1) = points[:2]
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif shape.kind == "circle" and len(points) >= 2:
        (cx, cy), _ = points[:2]
        r = math.hypot(points[0][0] - points[1][0], points[0][1] - points[1][1])
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif shape.kind == "mask" and shape.mask and len(points) >= 1:
        try:
            region = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape.mask))).convert("L")) > 0
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"undecodable mask of shape {shape.label!r} ({exc})") from None
        out = np.zeros(hw, bool)
        x0, y0 = round(points[0][0]), round(points[0][1])
        sx0, sy0 = max(-x0, 0), max(-y0, 0)
        x1, y1 = min(x0 + region.shape[1], width), min(y0 + region.shape[0], height)
        if x1 > max(x0, 0) and y1 > max(y0, 0):
            out[max(y0, 0) : y1, max(x0, 0) : x1] = region[sy0 : sy0 + y1 - max(y0, 0), sx0 : sx0 + x1 - max(x0, 0)]
        return out
    else:
        return None
    return np.asarray(canvas, dtype=bool)


def _render_labelme(source: LabelSource, hw: tuple[int, int]) -> np.ndarray:
    parsed = _parse_labelme(source.path)
    if isinstance(parsed, str):
        raise InvalidInput(parsed)
    if parsed.height and parsed.width and (parsed.height, parsed.width) != tuple(hw):
        raise InvalidInput(f"{source.path}: the file says the image is {parsed.width}x{parsed.height} (W x H) but it "
                           f"is {hw[1]}x{hw[0]}; its shapes cannot be placed")  # fmt: skip
    height, width = hw
    out = np.zeros(hw, np.uint8)
    index = source.context.index
    for shape in parsed.shapes:
        if shape.kind in _NO_REGION_SHAPES:
            continue
        value = index.get(shape.label.lower(), IGNORE_INDEX)
        try:
            mask = _draw_shape(shape, hw)
        except InvalidInput as exc:
            raise InvalidInput(f"{source.path}: {exc}") from None
        if mask is None:  # unknown type or too few points: unknown over its extent
            extent = _shape_extent(shape)
            if not extent:
                continue
            xs, ys = [p[0] for p in extent], [p[1] for p in extent]
            x0, y0 = max(math.floor(min(xs)), 0), max(math.floor(min(ys)), 0)
            out[y0 : min(math.floor(max(ys)) + 1, height), x0 : min(math.floor(max(xs)) + 1, width)] = IGNORE_INDEX
            continue
        out[mask] = value
    return out


# --------------------------------------------------------------------------------------------
# The store's hooks
# --------------------------------------------------------------------------------------------

READERS: dict[str, Callable[[Path], Dataset]] = {
    "cityscapes": _read_cityscapes, "mmseg": _read_mmseg, "yolo": _read_yolo, "coco": _read_coco,
    "labelme": _read_labelme,
}  # fmt: skip


def render_label_map(dataset: Dataset, sample: Sample, hw: tuple[int, int]) -> np.ndarray:
    """A foreign sample's derived label map, ``H x W uint8`` class indices of ``dataset.classes`` (255 unknown).

    Args:
        hw: the image's ``(height, width)``.

    Raises:
        InvalidInput: the annotation cannot be read or does not fit the image (the message names the file).
    """
    source = sample.label_source
    if source is None:
        raise InvalidInput(f"sample {sample.id!r} has no foreign annotation")
    if source.kind == "index_png":
        return _render_index_png(source, dataset.classes, hw)
    if source.kind == "coco":
        label = _render_coco(source, hw)
    elif source.kind == "yolo":
        label = _render_yolo(source, hw)
    elif source.kind == "labelme":
        label = _render_labelme(source, hw)
    else:
        raise InvalidInput(f"unknown label source kind {source.kind!r}")
    bad = label[(label >= len(dataset.classes)) & (label != IGNORE_INDEX)]
    if bad.size:
        raise InvalidInput(f"{source.path}: class indices {sorted(set(bad.tolist()))[:8]} outside the class set")
    return label


def label_stamp(dataset: Dataset, sample: Sample) -> str | None:
    """Identifies the version of a derived label map (its annotation, the class set), ``None`` when gone."""
    source = sample.label_source
    if source is None:
        return None
    stamp = source.token or file_stamp(source.path)
    if stamp is None:
        return None
    classes = hashlib.sha1("\n".join(dataset.classes.names).encode()).hexdigest()[:8]
    return f"{stamp}|{classes}"


def reload_sample(dataset: Dataset, sample: Sample, problems: list[str]) -> Sample:
    """The sample read again after its own files changed (its saved map or boxes, its YOLO or labelme file)."""
    source = sample.label_source
    if source is not None and source.kind == "yolo":
        parsed = _parse_yolo(source.path) if source.path.is_file() else ()
        if isinstance(parsed, str):
            problems.append(parsed)
            parsed = ()
        source = _yolo_source(source.path, parsed, source.context, sample.image_path, problems) if parsed else None
    elif source is not None and source.kind == "labelme":
        parsed = _parse_labelme(source.path) if source.path.is_file() else f"{source.path}: gone"
        if isinstance(parsed, str):
            problems.append(parsed)
            source = None
        else:
            source = _labelme_source(source.path, parsed, source.context, sample.image_path, problems)
    return _sample(dataset.root, sample.id, sample.image_path, dataset.classes, problems, source, sample.split,
                   sample.size)  # fmt: skip


def per_sample_files(sample: Sample) -> list[Path]:
    """The sample's own annotation file (none for COCO, whose shared JSON is watched with the folder)."""
    source = sample.label_source
    return [source.path] if source is not None and not source.token else []


def watched_paths(dataset: Dataset) -> list[Path] | None:
    """Folders and index files whose change means the listing must be read again (``None``: every folder)."""
    watched = getattr(dataset, "_watched", None)
    if watched is None:
        return None
    root = dataset.root
    return [*watched, root / MAPPING_FILE, root / LABELME_LABELS_FILE]


def copy_image_path(dataset: Dataset, sample: Sample, new_id: str) -> Path:
    """Where a copy of the sample's image is written so that the listing finds it under ``new_id``."""
    name = Path(new_id).name
    if dataset.layout == "cityscapes" and sample.image_path.stem.endswith("_leftImg8bit"):
        return sample.image_path.with_name(f"{name}_leftImg8bit{sample.image_path.suffix}")
    return sample.image_path.with_name(name + sample.image_path.suffix)
