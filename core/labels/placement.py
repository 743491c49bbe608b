"""Where pasted regions go: one placement routine shared by compositing (:mod:`core.generate.composite`)
and label-map overlays (:mod:`core.labels.overlay`).

A placement draws a transform (size from the data or relative, position, rotation, flip), then checks it
against the limits: the share of the region falling outside the target (truncation), the share covering
regions pasted before it (overlap), and the share of each of the target's own labelled objects it would
hide (``background_overlap``, per connected component of every "thing" class). A drawn size is kept while
positions are tried again: retrying sizes would favour the small ones that fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from core.errors import InvalidInput
from core.labels.overlay import Placement, Transform, WarpedRegion, sample_transform, warp_region
from core.labels.regions import Region


@dataclass(frozen=True)
class Limits:
    """How hard a placement may be tried and how much it may lose or cover.

    Attributes:
        attempts: placements drawn for one region before it is skipped.
        max_truncation: largest share of a region allowed to fall outside the target.
        max_overlap: largest share of a region allowed to cover regions pasted before it.
    """

    attempts: int = 10
    max_truncation: float = 1.0
    max_overlap: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 1000:
            raise InvalidInput(f"placement attempts must be 1..1000, got {self.attempts}")
        for name in ("max_truncation", "max_overlap"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidInput(f"{name} must be 0..1 (a share of the region), got {getattr(self, name)}")


@dataclass
class BackgroundObjects:
    """The background's own labelled objects and how much of each is hidden so far.

    Attributes:
        ids: ``h x w int32`` object number per pixel over ``box`` (0: not an object: background, stuff, ignore).
        box: ``(x0, y0, x1, y1)`` of the map's part holding objects (half-open).
        areas: ``K + 1 int64`` pixels per object (``areas[0]`` unused).
        hidden: ``K + 1 int64`` pixels of each object covered by pasted objects so far.
        limit: largest hidden share allowed per object.
    """

    ids: np.ndarray
    box: tuple[int, int, int, int]
    areas: np.ndarray
    hidden: np.ndarray
    limit: float

    def fresh(self, limit: float) -> BackgroundObjects:
        """The same objects with nothing hidden yet (for another composite onto the same background)."""
        return BackgroundObjects(self.ids, self.box, self.areas, np.zeros_like(self.areas), float(limit))

    def would_hide(self, window: tuple[int, int, int, int], pasted: np.ndarray) -> np.ndarray | None:
        """Pixels per object newly hidden by ``pasted`` (``h x w bool`` in ``window``, pixels not yet covered),
        or ``None`` when that would hide more than the limit of some object."""
        x0, y0, x1, y1 = window
        bx0, by0, bx1, by1 = self.box
        ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
        if ix1 <= ix0 or iy1 <= iy0:
            return np.zeros_like(self.areas)
        ids = self.ids[iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0]
        counts = np.bincount(ids[pasted[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]], minlength=len(self.areas))
        counts[0] = 0
        if np.any(self.hidden + counts > self.limit * self.areas):
            return None
        return counts


def background_objects(labels: np.ndarray | None, stuff, limit: float, ignore_index: int = 255) -> BackgroundObjects | None:
    """The connected components (8-connectivity) of every "thing" class of a background label map, or ``None``
    when there is none (or no map, or the limit is 1: nothing to check).

    Args:
        labels: ``H x W uint8`` label map, or ``None``.
        stuff: class indices that are regions, not objects (class 0 and the ignore index never are objects).
    """

    if labels is None or limit >= 1:
        return None
    key = (tuple(sorted(int(c) for c in stuff)), int(ignore_index))
    last = _LAST_OBJECTS  # one entry: composites onto the same background (benchmarks, previews) find them once
    if last is not None and last[1] == key and last[0].shape == labels.shape and np.array_equal(last[0], labels):
        return last[2].fresh(limit) if last[2] is not None else None
    found = _find_objects(labels, key[0], ignore_index)
    globals()["_LAST_OBJECTS"] = (np.array(labels, copy=True), key, found)
    return found.fresh(limit) if found is not None else None


_LAST_OBJECTS = None


def _find_objects(labels: np.ndarray, stuff, ignore_index: int) -> BackgroundObjects | None:
    import cv2

    lut = np.ones(256, np.uint8)
    lut[[0, ignore_index, *stuff]] = 0
    things = cv2.LUT(np.ascontiguousarray(labels, np.uint8), lut)
    x, y, w, h = cv2.boundingRect(things)  # only the part of the map holding objects is labelled
    if w == 0 or h == 0:
        return None
    crop, mask = labels[y : y + h, x : x + w], things[y : y + h, x : x + w]
    present = np.flatnonzero(cv2.calcHist([np.ascontiguousarray(crop)], [0], mask, [256], [0, 256]).ravel())
    ids, count = None, 1
    for cls in present:
        n, components = cv2.connectedComponents(mask if len(present) == 1 else (crop == cls).view(np.uint8),
                                                 connectivity=8, ltype=cv2.CV_32S)  # fmt: skip
        if ids is None:
            ids = components
        else:
            np.copyto(ids, components + (count - 1), where=components > 0)
        count += n - 1
    areas_arr = np.bincount(ids.ravel(), minlength=count).astype(np.int64)
    ids.setflags(write=False)
    return BackgroundObjects(ids, (x, y, x + w, y + h), areas_arr, np.zeros_like(areas_arr), 1.0)


class Placed(NamedTuple):
    """Where one region goes: its transform, the warped mask (``WarpedRegion`` without image), the pixels of
    its window it may paint (``h x w bool``) and the background object pixels it hides (or ``None``)."""

    transform: Transform
    warped: WarpedRegion
    allowed: np.ndarray
    hides: np.ndarray | None


def place_region(region: Region, labels: np.ndarray, taken: np.ndarray, placement: Placement, limits: Limits,
                 rng: np.random.Generator, *, pad: int = 0, sizes=None, background: BackgroundObjects | None = None,
                 redraw_sizes: bool = False) -> Placed | None:  # fmt: skip
    """A placement of ``region`` within the truncation and overlap limits (pasted objects and the background's
    own), or ``None`` when ``limits.attempts`` draws found none. Shared by compositing and label-map overlays.

    Args:
        labels: ``H x W uint8`` target label map (read only).
        taken: ``H x W bool`` pixels already painted by earlier regions of the same result.
        pad: pixels of margin around the warped window (room for blending or an ignore ring).

    The size is drawn once and only the position is drawn again on each attempt (unless ``redraw_sizes``):
    retrying sizes would favour the small ones that fit and pull pasted sizes away from the data's."""
    size = None
    for _ in range(limits.attempts):
        transform = sample_transform(region, labels.shape, placement, rng, sizes)
        if size is None or redraw_sizes or placement.ground_plane:
            size = (transform.scale, transform.stretch)
        else:
            transform = replace(transform, scale=size[0], stretch=size[1])
        warped = warp_region(region, transform, labels.shape, pad=pad, with_image=False)
        visible = int(warped.mask.sum())
        expected = region.area * transform.scale**2
        if visible == 0 or 1 - visible / expected > limits.max_truncation:
            continue
        x0, y0, x1, y1 = warped.window
        covered = taken[y0:y1, x0:x1]
        if (warped.mask & covered).sum() / visible > limits.max_overlap:
            continue
        allowed = allowed_pixels(labels[y0:y1, x0:x1], warped.mask, placement)
        hides = None
        if background is not None:
            hides = background.would_hide(warped.window, allowed & ~covered)
            if hides is None:
                continue
        return Placed(transform, warped, allowed, hides)
    return None


def allowed_pixels(labels_window: np.ndarray, mask: np.ndarray, placement: Placement) -> np.ndarray:
    """The pixels of ``mask`` (``h x w bool``) that may be painted over ``labels_window`` (``h x w uint8``):
    never a protected class, and only background (class 0) for ``layer="under"``."""
    allowed = mask.copy()
    if placement.protected:
        allowed &= ~np.isin(labels_window, placement.protected)
    if placement.layer == "under":
        allowed &= labels_window == 0
    return allowed
