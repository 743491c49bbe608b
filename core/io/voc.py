"""PASCAL VOC layout: ``JPEGImages/``, ``SegmentationClass/`` palette PNGs, ``Annotations/*.xml`` boxes,
optional ``ImageSets/<task>/<split>.txt``.

VOC XML boxes are inclusive and 1-based (the devkit's convention: ``xmin=1`` is the first column);
they are converted to half-open 0-based :class:`core.types.Box` on reading and back on writing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from core.errors import InvalidInput
from core.io.atomic import atomic_write_bytes, write_with_history
from core.types import Box, ClassSet

IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClass"
ANNOTATION_DIR = "Annotations"
IMAGESETS_DIR = "ImageSets"


def parse_voc_xml(path: Path, classes: ClassSet) -> tuple[list[Box], tuple[int, int] | None, list[str]]:
    """Read the boxes of one VOC annotation file.

    Args:
        path: the ``.xml`` file.
        classes: class names are matched against this set (case-insensitive).

    Returns:
        ``(boxes, size, problems)``: the boxes (half-open, 0-based), the ``(height, width)`` the file
        declares (or ``None``), and one message per object that was skipped (unknown class, bad or
        empty box), so that one bad object does not hide the rest.

    Raises:
        InvalidInput: when the file is not well-formed XML.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InvalidInput(f"{path}: not a readable VOC annotation ({exc})") from None
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            size = (int(float(size_el.findtext("height", "0"))), int(float(size_el.findtext("width", "0"))))
        except ValueError:
            size = None
        if size is not None and min(size) <= 0:
            size = None
    boxes: list[Box] = []
    problems: list[str] = []
    for n, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        try:
            label = classes.index_of(name)
            bnd = obj.find("bndbox")
            if bnd is None:
                raise InvalidInput("object has no <bndbox>")
            corners = [float(bnd.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append(Box.from_inclusive(corners[0] - 1, corners[1] - 1, corners[2] - 1, corners[3] - 1, label))
        except (InvalidInput, ValueError) as exc:
            problems.append(f"{path}: object {n} ({name or 'unnamed'}) skipped: {exc}")
    return boxes, size, problems


def voc_xml(image_name: str, size: tuple[int, int], boxes: list[Box], classes: ClassSet, folder: str = "") -> bytes:
    """Serialise boxes as a VOC annotation document.

    Args:
        image_name: the image's file name (``<filename>``).
        size: ``(height, width)`` of the image.
        boxes: half-open 0-based boxes; written inclusive and 1-based.
        classes: gives the class names.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = image_name
    size_el = ET.SubElement(root, "size")
    ET.SubElement(size_el, "width").text = str(size[1])
    ET.SubElement(size_el, "height").text = str(size[0])
    ET.SubElement(size_el, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for box in boxes:
        classes.check_index(box.label)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes.names[box.label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = box.to_inclusive()
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1 + 1, y1 + 1), strict=True):
            ET.SubElement(bnd, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def write_voc_xml(
    path: Path,
    image_name: str,
    size: tuple[int, int],
    boxes: list[Box],
    classes: ClassSet,
    *,
    dataset_root: Path | None = None,
) -> Path | None:
    """Write a VOC annotation atomically; with ``dataset_root`` the previous version is kept in history.

    Returns:
        where the previous version was kept, or ``None``.
    """
    for box in boxes:
        if box.x1 > size[1] or box.y1 > size[0]:
            raise InvalidInput(
                f"box ({box.x0}, {box.y0}, {box.x1}, {box.y1}) reaches outside the {size[1]}x{size[0]} image; "
                "clip it first"
            )
    data = voc_xml(image_name, size, boxes, classes)
    if dataset_root is None:
        atomic_write_bytes(Path(path), data)
        return None
    return write_with_history(Path(dataset_root), Path(path), lambda tmp: tmp.write_bytes(data))


def read_image_sets(root: Path) -> dict[str, tuple[str, ...]]:
    """Map sample id -> split names from ``ImageSets/Segmentation/*.txt`` (else ``ImageSets/Main/*.txt``).

    Files of VOC's per-class form (``<id> <flag>``) count an id when the flag is not ``-1``.
    """
    splits: dict[str, list[str]] = {}
    for task in ("Segmentation", "Main"):
        folder = root / IMAGESETS_DIR / task
        if not folder.is_dir():
            continue
        for txt in sorted(folder.glob("*.txt")):
            if "_" in txt.stem and task == "Main":
                continue  # per-class files (aeroplane_train.txt) repeat the split files
            for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split()
                if not parts or (len(parts) > 1 and parts[1] == "-1"):
                    continue
                splits.setdefault(parts[0], []).append(txt.stem)
        if splits:
            break
    return {k: tuple(v) for k, v in splits.items()}
