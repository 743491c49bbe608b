"""Single-class regions of label maps and their connected components."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidInput
from core.types import IGNORE_INDEX

# A component smaller than this share of its class's largest component in the same map is a fragment (a piece
# of one object cut off by an occluder or by the ignore band around it), not an object of its own: compositing
# neither cuts it nor counts it when measuring object sizes (pasting a 100-pixel sliver of a person reads as noise).
FRAGMENT_SHARE = 0.1


@dataclass
class Region:
    """A piece of one class cut from a label map (and its image).

    Attributes:
        source_id: the sample it comes from.
        class_index: its class.
        component: index of the connected component (0-based, by decreasing area), or ``None`` for the
            class's whole region in the map.
        bbox: ``(x0, y0, x1, y1)`` half-open, in the source map.
        mask: ``h x w bool`` pixels of the region inside ``bbox``.
        image: ``h x w x 3 uint8`` RGB of the source image inside ``bbox``, or ``None``.
        source_shape: ``(H, W)`` of the source map.
    """

    source_id: str
    class_index: int
    component: int | None
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    image: np.ndarray | None
    source_shape: tuple[int, int]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def record(self) -> dict:
        """Provenance as plain JSON values."""
        return {
            "sample": self.source_id,
            "class": self.class_index,
            "component": self.component,
            "bbox": list(self.bbox),
        }


def _crop_region(label_map, image, mask, source_id, class_index, component) -> Region:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    crop_image = None if image is None else np.ascontiguousarray(image[y0:y1, x0:x1])
    return Region(source_id, class_index, component, (x0, y0, x1, y1), mask[y0:y1, x0:x1].copy(), crop_image,
                  label_map.shape)  # fmt: skip


def class_components(
    label_map: np.ndarray,
    class_index: int,
    *,
    image: np.ndarray | None = None,
    source_id: str = "",
    min_area: int = 1,
    fragment_share: float = 0.0,
) -> list[Region]:
    """The connected components (8-connectivity) of one class, largest first.

    Args:
        label_map: ``H x W uint8``.
        image: ``H x W x 3 uint8`` paired image, cropped along with each component when given.
        min_area: components smaller than this many pixels are left out.
        fragment_share: components smaller than this share of the class's largest component in the same map
            are left out too (see :data:`FRAGMENT_SHARE`).
    """
    import cv2

    mask = (label_map == class_index).astype(np.uint8)
    if not mask.any():
        return []
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    order = sorted(range(1, count), key=lambda c: -stats[c, cv2.CC_STAT_AREA])
    largest = int(stats[order[0], cv2.CC_STAT_AREA]) if order else 0
    regions = []
    for rank, comp in enumerate(order):
        if stats[comp, cv2.CC_STAT_AREA] < max(min_area, fragment_share * largest):
            continue
        x, y, w, h = (int(v) for v in stats[comp, :4])
        sub = components[y : y + h, x : x + w] == comp
        crop_image = None if image is None else np.ascontiguousarray(image[y : y + h, x : x + w])
        regions.append(Region(source_id, class_index, rank, (x, y, x + w, y + h), sub, crop_image, label_map.shape))
    return regions


def decompose(
    label_map: np.ndarray,
    *,
    image: np.ndarray | None = None,
    source_id: str = "",
    min_area: int = 1,
    ignore_index: int = IGNORE_INDEX,
    include_background: bool = False,
) -> dict[int, tuple[Region, list[Region]]]:
    """Split a label map into single-class regions and their connected components.

    Args:
        label_map: ``H x W uint8``.
        image: ``H x W x 3 uint8`` paired image (cropped along), or ``None``.
        include_background: also return class 0.

    Returns:
        class index -> ``(whole region, components largest first)`` for every class present.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise InvalidInput(f"a label map must be H x W, got shape {label_map.shape}")
    if image is not None and image.shape[:2] != label_map.shape:
        raise InvalidInput(
            f"image is {image.shape[1]}x{image.shape[0]} but the label map {label_map.shape[1]}x{label_map.shape[0]}"
        )
    out: dict[int, tuple[Region, list[Region]]] = {}
    for value in np.unique(label_map):
        cls = int(value)
        if cls == ignore_index or (cls == 0 and not include_background):
            continue
        whole = _crop_region(label_map, image, label_map == cls, source_id, cls, None)
        out[cls] = (whole, class_components(label_map, cls, image=image, source_id=source_id, min_area=min_area))
    return out


def iter_components(
    items: Iterator[tuple[str, np.ndarray, np.ndarray | None]], class_index: int, min_area: int = 1
) -> Iterator[Region]:
    """Components of ``class_index`` over ``(sample id, label map, image)`` items, one map at a time."""
    for source_id, label_map, image in items:
        yield from class_components(label_map, class_index, image=image, source_id=source_id, min_area=min_area)
