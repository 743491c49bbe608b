"""Touch-up operations on label maps: fill holes, remove small blobs, open / close, brush strokes.

Every function takes an ``H x W uint8`` label map and returns a new one; the ignore value (255) and
class 0 (background) are never "grown" by morphology, and one class never overwrites another except
by an explicit brush stroke.
"""

from __future__ import annotations

import numpy as np

from core.errors import InvalidInput
from core.types import IGNORE_INDEX

BACKGROUND = 0


def _object_classes(label_map: np.ndarray, ignore_index: int) -> list[int]:
    values = np.unique(label_map)
    return [int(v) for v in values if v not in (BACKGROUND, ignore_index)]


def _check(label_map: np.ndarray) -> np.ndarray:
    arr = np.asarray(label_map)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise InvalidInput(f"touch-ups need an H x W uint8 label map, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def fill_holes(label_map: np.ndarray, max_area: int | None = None, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Fill background holes enclosed by a single class.

    Args:
        max_area: only holes of at most this many pixels (None: any size).

    Returns:
        ``H x W uint8``.
    """
    import cv2

    out = _check(label_map).copy()
    height, width = out.shape
    for cls in _object_classes(out, ignore_index):
        outside = (out != cls).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=4)
        for comp in range(1, count):
            x, y, w, h, area = stats[comp]
            touches_border = x == 0 or y == 0 or x + w == width or y + h == height
            if touches_border or (max_area is not None and area > max_area):
                continue
            hole = components == comp
            if np.all(out[hole] == BACKGROUND):
                out[hole] = cls
    return out


def remove_small_blobs(label_map: np.ndarray, min_area: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Set connected regions of any class smaller than ``min_area`` pixels to background."""
    import cv2

    if min_area < 1:
        raise InvalidInput(f"minimum blob area must be at least 1 pixel, got {min_area}")
    out = _check(label_map).copy()
    for cls in _object_classes(out, ignore_index):
        count, components, stats, _ = cv2.connectedComponentsWithStats((out == cls).astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
        small = small[small != 0]
        if len(small):
            out[np.isin(components, small)] = BACKGROUND
    return out


def _kernel(size: int) -> np.ndarray:
    import cv2

    if not 1 <= size <= 101:
        raise InvalidInput(f"kernel size must be 1..101 pixels, got {size}")
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def open_regions(label_map: np.ndarray, size: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Morphological opening per class: thin protrusions and specks become background."""
    import cv2

    out = _check(label_map).copy()
    kernel = _kernel(size)
    for cls in _object_classes(out, ignore_index):
        mask = (out == cls).astype(np.uint8)
        kept = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel) > 0
        out[(mask > 0) & ~kept] = BACKGROUND
    return out


def close_regions(label_map: np.ndarray, size: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Morphological closing per class: narrow gaps and notches are filled, over background only."""
    import cv2

    original = _check(label_map)
    out = original.copy()
    kernel = _kernel(size)
    for cls in _object_classes(original, ignore_index):
        mask = (original == cls).astype(np.uint8)
        closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel) > 0
        out[closed & (out == BACKGROUND)] = cls
    return out


def paint(label_map: np.ndarray, stroke: np.ndarray, value: int) -> np.ndarray:
    """Set the pixels of a brush ``stroke`` (``H x W bool``) to ``value`` (a class, 0 to erase, or 255)."""
    out = _check(label_map).copy()
    if stroke.shape != out.shape:
        raise InvalidInput(
            f"brush stroke is {stroke.shape[1]}x{stroke.shape[0]}, the label map {out.shape[1]}x{out.shape[0]}"
        )
    out[stroke.astype(bool)] = value
    return out
