"""Priors drawn from a label map: class boundaries, and a filled rendering in ADE20K colours for the
segmentation ControlNets (trained on ADE20K's palette), with the dataset's classes mapped to ADE20K's."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from core.errors import InvalidInput
from core.types import ADE20K_NAMES, ClassSet

MASK_PRIORS = ("boundary", "ade20k", "none")

# Dataset class names that are not ADE20K names, and the ADE20K class each one is drawn as.
ADE20K_SYNONYMS = {
    "aeroplane": "airplane", "bird": "animal", "cat": "animal", "cow": "animal", "dog": "animal", "horse": "animal",
    "sheep": "animal", "diningtable": "table", "dining table": "table", "motorbike": "minibike",
    "motorcycle": "minibike", "pottedplant": "plant", "potted plant": "plant", "tvmonitor": "television receiver",
    "tv": "television receiver", "vegetation": "tree", "terrain": "grass", "traffic sign": "signboard",
    "rider": "person", "train": "bus", "cup": "glass", "sidewalk": "sidewalk",
}  # fmt: skip


def boundaries(
    label_map: np.ndarray, thickness: int = 2, classes: Iterable[int] | None = None, ignore_index: int = 255
) -> np.ndarray:
    """The borders between classes, ``H x W uint8`` (255 on a border).

    Args:
        label_map: ``H x W uint8``.
        thickness: border width in pixels (>= 1).
        classes: draw only the borders of these classes (all when ``None``); ignore pixels never
            make a border of their own.
    """
    import cv2

    from core.viz import class_borders

    if not 1 <= thickness <= 50:
        raise InvalidInput(f"boundary thickness must be 1..50 px, got {thickness}")
    label = np.asarray(label_map)
    cleaned = label.copy()
    if (label == ignore_index).any():
        # void pixels take their nearest labelled neighbour, so ignore bands do not draw double lines
        void = (label == ignore_index).astype(np.uint8)
        _, nearest = cv2.distanceTransformWithLabels(void, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
        seeds = np.zeros(int(nearest.max()) + 1, dtype=label.dtype)
        seeds[nearest[void == 0]] = label[void == 0]
        cleaned = np.where(void > 0, seeds[nearest], label) if (void == 0).any() else label
    borders = class_borders(cleaned)
    if classes is not None:
        wanted = np.isin(cleaned, list(classes))
        borders &= cv2.dilate(wanted.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    out = borders.astype(np.uint8) * 255
    if thickness > 2:
        out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (thickness - 1, thickness - 1)))
    return out


def ade20k_mapping(classes: ClassSet, overrides: dict[str, str | None] | None = None) -> dict[int, int | None]:
    """Dataset class index -> ADE20K class index (``None``: drawn black), by exact name, then by the
    synonym table, then by ``overrides`` (dataset class name -> ADE20K name or ``None``).

    Raises:
        InvalidInput: an override names an unknown ADE20K class.
    """
    lowered = {name.lower(): i for i, name in enumerate(ADE20K_NAMES)}
    mapping: dict[int, int | None] = {}
    for index, name in enumerate(classes.names):
        key = name.lower()
        target = key if key in lowered else ADE20K_SYNONYMS.get(key)
        mapping[index] = lowered.get(target) if target else None
    for name, ade_name in (overrides or {}).items():
        index = classes.index_of(name)
        if ade_name is None:
            mapping[index] = None
        elif ade_name.lower() not in lowered:
            raise InvalidInput(f"unknown ADE20K class {ade_name!r} for {name!r}; see core.types.ADE20K_NAMES")
        else:
            mapping[index] = lowered[ade_name.lower()]
    return mapping


def ade20k_rendering(
    label_map: np.ndarray, classes: ClassSet, mapping: dict[int, int | None] | None = None
) -> np.ndarray:
    """The label map filled with ADE20K colours (unmapped classes and ignore pixels black).

    Returns:
        ``H x W x 3 uint8``.
    """
    ade = ClassSet.builtin("ade20k")
    mapping = mapping if mapping is not None else ade20k_mapping(classes)
    table = np.zeros((256, 3), dtype=np.uint8)
    for index, target in mapping.items():
        if target is not None:
            table[index] = ade.colors[target]
    return table[np.asarray(label_map, dtype=np.uint8)]


def mask_prior(label_map: np.ndarray, kind: str, classes: ClassSet, *, thickness: int = 2,
               only_classes: Iterable[int] | None = None) -> np.ndarray | None:  # fmt: skip
    """The prior ``kind`` of a label map: ``boundary`` (``H x W uint8``), ``ade20k`` (``H x W x 3 uint8``)
    or ``none`` (``None``)."""
    if kind not in MASK_PRIORS:
        raise InvalidInput(f"unknown mask prior {kind!r}; accepted: {', '.join(MASK_PRIORS)}")
    if kind == "none":
        return None
    if kind == "boundary":
        return boundaries(label_map, thickness, only_classes, classes.ignore_index)
    return ade20k_rendering(label_map, classes)
