"""Many boxes of many classes -> one label map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import InvalidInput
from core.types import IGNORE_INDEX, Box

OVERLAP_RULES = ("smaller", "larger", "order")


def paint_order(boxes: Sequence[Box], overlap: str) -> list[int]:
    """Indices of ``boxes`` in the order they are painted (later paints over earlier).

    ``smaller``: the smaller box wins where masks overlap (a person on a sofa keeps its pixels);
    ``larger``: the larger box wins; ``order``: the later box in the list wins.
    """
    if overlap not in OVERLAP_RULES:
        raise InvalidInput(f"unknown overlap rule {overlap!r}; accepted: {', '.join(OVERLAP_RULES)}")
    indices = list(range(len(boxes)))
    if overlap == "smaller":
        return sorted(indices, key=lambda i: (-boxes[i].area, i))
    if overlap == "larger":
        return sorted(indices, key=lambda i: (boxes[i].area, i))
    return indices


def compose_label_map(
    shape: tuple[int, int],
    boxes: Sequence[Box],
    masks: Sequence[np.ndarray],
    *,
    overlap: str = "smaller",
    ignore_band: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Paint per-box masks into one label map.

    Args:
        shape: ``(H, W)``.
        boxes: the boxes; each one's ``label`` is the class painted.
        masks: one ``H x W bool`` mask per box.
        overlap: which mask wins where they overlap (see :func:`paint_order`).
        ignore_band: half-width in pixels of an ignore band (``ignore_index``) laid on every class
            border, as VOC marks uncertain borders; 0 for none.

    Returns:
        ``H x W uint8``: box classes, 0 where no mask is, ``ignore_index`` on the band.
    """
    if len(boxes) != len(masks):
        raise InvalidInput(f"{len(boxes)} boxes but {len(masks)} masks")
    if ignore_band < 0 or ignore_band > 50:
        raise InvalidInput(f"ignore band must be 0..50 pixels, got {ignore_band}")
    label_map = np.zeros(shape, dtype=np.uint8)
    for index in paint_order(boxes, overlap):
        mask = masks[index]
        if mask.shape != tuple(shape):
            raise InvalidInput(f"mask {index} has shape {mask.shape}, expected {tuple(shape)}")
        label_map[mask] = boxes[index].label
    if ignore_band > 0:
        label_map[border_band(label_map, ignore_band)] = ignore_index
    return label_map


def border_band(label_map: np.ndarray, half_width: int) -> np.ndarray:
    """``H x W bool`` pixels within ``half_width`` of a border between two different labels."""
    import cv2

    from core.viz import class_borders

    borders = class_borders(label_map).astype(np.uint8)
    if half_width <= 1:
        return borders.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * half_width - 1, 2 * half_width - 1))
    return cv2.dilate(borders, kernel) > 0
