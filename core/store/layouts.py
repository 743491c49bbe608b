"""Dataset folder layouts: reading a folder's samples, loading and saving one sample's annotations.

Use these through :class:`core.store.DatasetStore`, which adds revisions, conflict checks and caches.

SegStudio's own layouts:

- ``voc``: ``JPEGImages/``, ``SegmentationClass/`` palette PNGs, ``Annotations/*.xml``, optional
  ``ImageSets/``;
- ``boxes_csv``: ``images/``, ``masks/`` and ``boxes.csv`` (``name,image,mask,x0,y0,x1,y1``, corners
  inclusive and 0-based; an optional ``class`` column holds a class name or index);
- ``images``: a plain folder of images, searched recursively, with nothing annotated yet. Label maps
  and boxes saved for it go to ``SegmentationClass/<id>.png`` and ``Annotations/<id>.xml``, as in VOC.

Layouts written by other tools (``coco``, ``yolo``, ``cityscapes``, ``mmseg``, ``labelme``) are read by
:mod:`core.store.foreign`: their label maps are derived on demand (never written into the folder), and a label map
or boxes saved for one of their samples go to ``SegmentationClass/<id>.png`` and ``Annotations/<id>.xml``, which
then take precedence over the derived ones.

A ``classes.json`` in the root gives the class set; otherwise VOC's (or background/foreground for
``boxes_csv``; the foreign layouts' own classes for those). Per-file problems (a broken XML, a missing image) are
collected in ``Dataset.problems`` and the entry is skipped; the dataset still opens.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.io import voc
from core.io.atomic import write_with_history
from core.io.images import IMAGE_SUFFIXES, image_size, load_image, load_label_map, save_label_map
from core.store import foreign
from core.store.index import file_stamp
from core.store.records import Dataset, Sample, natural_key
from core.types import Box, ClassSet, voc_colormap

CLASSES_FILE = "classes.json"
BOXES_CSV = "boxes.csv"
CSV_COLUMNS = ("name", "image", "mask", "x0", "y0", "x1", "y1")
SKIPPED_DIRS = {voc.LABEL_DIR, voc.ANNOTATION_DIR, voc.IMAGESETS_DIR, "masks"}
OWN_LAYOUTS = ("voc", "boxes_csv", "images")


def detect_layout(root: Path) -> str:
    """``"voc"`` when ``JPEGImages/`` exists, ``"boxes_csv"`` when ``boxes.csv`` exists, then the layouts of
    other tools (:func:`core.store.foreign.detect`), else ``"images"``."""
    if (root / voc.IMAGE_DIR).is_dir():
        return "voc"
    if (root / BOXES_CSV).is_file():
        return "boxes_csv"
    return foreign.detect(root) or "images"


LAYOUTS = (*OWN_LAYOUTS, *foreign.FOREIGN_LAYOUTS)


def _class_set(root: Path, default: ClassSet | None) -> ClassSet | None:
    path = root / CLASSES_FILE
    return ClassSet.load(path) if path.is_file() else default


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def open_dataset(root: str | Path, layout: str | None = None) -> Dataset:
    """Open a dataset folder.

    Args:
        root: the folder.
        layout: one of :data:`LAYOUTS`; detected when ``None``.

    Raises:
        InvalidInput: the folder does not exist, the layout is unknown, or no image was found.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"dataset folder {root} does not exist or is not a folder")
    layout = layout or detect_layout(root)
    readers = {"voc": _read_voc, "boxes_csv": _read_boxes_csv, "images": _read_image_folder, **foreign.READERS}
    if layout not in readers:
        raise InvalidInput(f"unknown dataset layout {layout!r}; accepted: {', '.join(LAYOUTS)}")
    dataset = readers[layout](root)
    if not dataset.samples:
        detail = f" ({len(dataset.problems)} problems: {dataset.problems[0]})" if dataset.problems else ""
        raise InvalidInput(
            f"no images found in {root} (layout {layout}){detail}; accepted layouts: a VOC folder with "
            f"JPEGImages/, a folder with boxes.csv, COCO, YOLO, Cityscapes, mmsegmentation or labelme folders, "
            f"or a folder of {', '.join(IMAGE_SUFFIXES)} files"
        )
    return dataset


def annotated_sample(root: Path, sample_id: str, image_path: Path, classes: ClassSet, problems: list[str]) -> Sample:
    """A sample whose label map and boxes sit at the VOC places for its id (when present)."""
    label_path = root / voc.LABEL_DIR / f"{sample_id}.png"
    xml_path = root / voc.ANNOTATION_DIR / f"{sample_id}.xml"
    boxes: list[Box] = []
    size = None
    if xml_path.is_file():
        try:
            boxes, size, box_problems = voc.parse_voc_xml(xml_path, classes)
            problems.extend(box_problems)
        except InvalidInput as exc:
            problems.append(str(exc))
    return Sample(
        id=sample_id,
        image_path=image_path,
        label_path=label_path if label_path.is_file() else None,
        boxes=boxes,
        size=size,
    )


def _read_voc(root: Path) -> Dataset:
    classes = _class_set(root, ClassSet.builtin("voc"))
    problems: list[str] = []
    samples: dict[str, Sample] = {}
    for image_path in sorted((root / voc.IMAGE_DIR).iterdir()):
        if not _is_image(image_path):
            continue
        sample_id = image_path.stem
        if sample_id in samples:
            problems.append(
                f"{image_path}: skipped, {samples[sample_id].image_path.name} has the same id {sample_id!r}"
            )
            continue
        samples[sample_id] = annotated_sample(root, sample_id, image_path, classes, problems)
    splits = voc.read_image_sets(root)
    for sample in samples.values():
        sample.split = splits.get(sample.id, ())
    return Dataset(root, "voc", classes, sorted(samples.values(), key=lambda s: natural_key(s.id)), problems)


def _read_image_folder(root: Path) -> Dataset:
    classes = _class_set(root, ClassSet.builtin("voc"))
    problems: list[str] = []
    samples: dict[str, Sample] = {}
    for image_path in sorted(root.rglob("*")):
        relative = image_path.relative_to(root)
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in relative.parts[:-1]):
            continue
        if not _is_image(image_path):
            continue
        sample_id = relative.with_suffix("").as_posix()
        if sample_id in samples:
            problems.append(
                f"{image_path}: skipped, {samples[sample_id].image_path.name} has the same id {sample_id!r}"
            )
            continue
        samples[sample_id] = annotated_sample(root, sample_id, image_path, classes, problems)
    return Dataset(root, "images", classes, sorted(samples.values(), key=lambda s: natural_key(s.id)), problems)


def _foreground_classes() -> ClassSet:
    return ClassSet("boxes", ("background", "foreground"), voc_colormap(2))


def _csv_label(row: dict, classes: ClassSet) -> int:
    raw = (row.get("class") or "").strip()
    if not raw:
        return 1 if len(classes) > 1 else 0
    if raw.isdigit():
        classes.check_index(int(raw))
        return int(raw)
    return classes.index_of(raw)


def _read_boxes_csv(root: Path) -> Dataset:
    classes = _class_set(root, _foreground_classes())
    problems: list[str] = []
    samples: dict[str, Sample] = {}
    csv_path = root / BOXES_CSV
    text = csv_path.read_text(encoding="utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidInput(f"{csv_path}: missing columns {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
    for line_no, row in enumerate(reader, start=2):
        where = f"{csv_path}:{line_no}"
        try:
            name = row["name"].strip()
            image_path = root / row["image"].strip()
            if not name:
                raise InvalidInput("empty name")
            if not image_path.is_file():
                raise InvalidInput(f"image {image_path} not found")
            corners = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
            box = Box.from_inclusive(*corners, label=_csv_label(row, classes))
        except (InvalidInput, ValueError, TypeError) as exc:
            problems.append(f"{where}: row skipped: {exc}")
            continue
        sample = samples.get(name)
        if sample is None:
            mask_rel = (row.get("mask") or "").strip()
            mask_path = root / mask_rel if mask_rel else None
            sample = Sample(name, image_path, mask_path if mask_path and mask_path.is_file() else None)
            samples[name] = sample
        sample.boxes.append(box)
    return Dataset(root, "boxes_csv", classes, sorted(samples.values(), key=lambda s: natural_key(s.id)), problems)


# --------------------------------------------------------------------------------------------
# Loading and saving one sample
# --------------------------------------------------------------------------------------------


def load_sample_image(sample: Sample) -> np.ndarray:
    """The sample's image, ``H x W x 3 uint8`` RGB (see :func:`core.io.images.load_image`)."""
    return load_image(sample.image_path)


def load_sample_label_map(
    dataset: Dataset, sample: Sample, image_hw: tuple[int, int] | None = None
) -> np.ndarray | None:
    """The sample's label map, ``H x W uint8``, checked against its image size; ``None`` when it has none.

    A saved map (``sample.label_path``) is read when it exists, else the map derived from another tool's
    annotation (``sample.label_source``).

    Args:
        image_hw: the image's ``(height, width)`` when already known (read from the header otherwise).
    """
    if sample.label_path is not None and sample.label_path.is_file():
        expected = image_hw or image_size(sample.image_path)
        return load_label_map(sample.label_path, dataset.classes, expected_size=expected)
    if sample.label_source is not None:
        return foreign.render_label_map(dataset, sample, image_hw or image_size(sample.image_path))
    return None


def label_origin(sample: Sample) -> Path | None:
    """The file the sample's label map is read from: its saved map, else its foreign annotation; ``None``
    when it has no label map."""
    if sample.label_path is not None and sample.label_path.is_file():
        return sample.label_path
    if sample.label_source is not None:
        return sample.label_source.path
    return None


def label_version(dataset: Dataset, sample: Sample) -> tuple[str, str] | None:
    """``(key, stamp)`` naming the sample's label map and its version, for caching facts about it; ``None``
    when it has no label map."""
    if sample.label_path is not None and sample.label_path.is_file():
        stamp = file_stamp(sample.label_path)
        return (str(sample.label_path), stamp) if stamp else None
    if sample.label_source is not None:
        stamp = foreign.label_stamp(dataset, sample)
        return (f"{sample.label_source.path}#{sample.id}", stamp) if stamp else None
    return None


def annotation_stamp(dataset: Dataset, sample: Sample) -> str | None:
    """The version of the sample's own annotation files (its saved boxes, and for other tools' layouts its own
    annotation file); a change means the sample must be read again (:func:`reload_sample`)."""
    stamp = file_stamp(dataset.root / voc.ANNOTATION_DIR / f"{sample.id}.xml")
    if dataset.layout in OWN_LAYOUTS:
        return stamp
    return "|".join([stamp or "-", *(file_stamp(p) or "-" for p in foreign.per_sample_files(sample))])


def reload_sample(dataset: Dataset, sample: Sample, problems: list[str]) -> Sample:
    """The sample read again from its annotation files (after another program changed them)."""
    if dataset.layout not in OWN_LAYOUTS:
        return foreign.reload_sample(dataset, sample, problems)
    fresh = annotated_sample(dataset.root, sample.id, sample.image_path, dataset.classes, problems)
    fresh.split = sample.split
    return fresh


def watched_paths(dataset: Dataset) -> list[Path] | None:
    """Folders and files whose change means the listing must be read again; ``None``: the store's default."""
    return None if dataset.layout in OWN_LAYOUTS else foreign.watched_paths(dataset)


def copy_image_path(dataset: Dataset, sample: Sample, new_id: str) -> Path:
    """Where the image of a copy of ``sample`` saved as ``new_id`` goes (the listing then finds it by that id)."""
    if dataset.layout not in OWN_LAYOUTS:
        return foreign.copy_image_path(dataset, sample, new_id)
    return sample.image_path.with_name(Path(new_id).name + sample.image_path.suffix)


def label_path_for(dataset: Dataset, sample: Sample) -> Path:
    """Where the sample's label map is (or will be) stored."""
    if sample.label_path is not None:
        return sample.label_path
    folder = "masks" if dataset.layout == "boxes_csv" else voc.LABEL_DIR
    return dataset.root / folder / f"{sample.id}.png"


def boxes_path_for(dataset: Dataset, sample: Sample) -> Path:
    """The file that holds the sample's boxes (``boxes.csv`` is shared by every sample of that layout)."""
    if dataset.layout == "boxes_csv":
        return dataset.root / BOXES_CSV
    return dataset.root / voc.ANNOTATION_DIR / f"{sample.id}.xml"


def save_sample_label_map(dataset: Dataset, sample: Sample, label_map: np.ndarray) -> Path | None:
    """Save a sample's label map as a palette PNG, atomically, keeping the previous version.

    Args:
        label_map: ``H x W uint8`` class indices, the size of the sample's image.

    Returns:
        where the previous version was kept, or ``None`` when there was none.

    Raises:
        InvalidInput: wrong size or values outside the class set (nothing is written).
    """
    height, width = image_size(sample.image_path)
    if tuple(np.shape(label_map)) != (height, width):
        raise InvalidInput(
            f"label map for {sample.id!r} is {np.shape(label_map)[1]}x{np.shape(label_map)[0]} (W x H) but its image "
            f"is {width}x{height}; they must be the same size"
        )
    path = label_path_for(dataset, sample)
    kept = save_label_map(path, label_map, dataset.classes, dataset_root=dataset.root)
    sample.label_path = path
    return kept


def save_sample_boxes(dataset: Dataset, sample: Sample, boxes: list[Box]) -> Path | None:
    """Save a sample's boxes (VOC XML, or the sample's rows of ``boxes.csv``), atomically, keeping the
    previous version.

    Raises:
        InvalidInput: a box outside the image or of an unknown class (nothing is written).
    """
    height, width = image_size(sample.image_path)
    for box in boxes:
        dataset.classes.check_index(box.label)
        box.clip(width, height)
    boxes = [b.clip(width, height) for b in boxes]
    if dataset.layout == "boxes_csv":
        kept = _save_csv_boxes(dataset, sample, boxes)
    else:
        xml_path = dataset.root / voc.ANNOTATION_DIR / f"{sample.id}.xml"
        kept = voc.write_voc_xml(
            xml_path, sample.image_path.name, (height, width), boxes, dataset.classes, dataset_root=dataset.root
        )
    sample.boxes = list(boxes)
    sample.size = (height, width)
    return kept


def _save_csv_boxes(dataset: Dataset, sample: Sample, boxes: list[Box]) -> Path | None:
    """Rewrite ``boxes.csv`` with this sample's rows replaced (other rows kept as they are)."""
    csv_path = dataset.root / BOXES_CSV
    reader = csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8-sig")))
    fields = list(reader.fieldnames or CSV_COLUMNS)
    if "class" not in fields:
        fields.append("class")
    rows = [r for r in reader if (r.get("name") or "").strip() != sample.id]
    image_rel = sample.image_path.relative_to(dataset.root).as_posix()
    mask_rel = label_path_for(dataset, sample).relative_to(dataset.root).as_posix()
    for box in boxes:
        x0, y0, x1, y1 = box.to_inclusive()
        rows.append({"name": sample.id, "image": image_rel, "mask": mask_rel, "x0": x0, "y0": y0, "x1": x1,
                     "y1": y1, "class": dataset.classes.names[box.label]})  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8")
    return write_with_history(dataset.root, csv_path, lambda tmp: tmp.write_bytes(data))
