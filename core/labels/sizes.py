"""Object sizes and positions measured over a dataset's own label maps, to draw plausible placements from.

An *object* is a connected component (8-connectivity) of one class of at least ``min_area`` pixels. For each
one we keep its class, its **area share** (pixels over the map's pixels), its **aspect** (bounding-box width
over height) and its **centre** (bounding-box centre over the map's width and height). Placements draw one
observed object of the pasted class (of any class when the class has fewer than ``min_per_class`` objects)
and take its area share, aspect and, when asked, its position.

Per-map measurements are cached in the store's workspace index (keyed by the sample's revision), so the
dataset folder is never written and a map is measured again only after it changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.errors import InvalidInput, StudioError
from core.labels.regions import FRAGMENT_SHARE
from core.types import IGNORE_INDEX

MIN_PER_CLASS = 5  # fewer objects than this: a class draws from every class's objects
SHARE_JITTER = 0.1  # log-normal spread laid on a drawn area share (smooths a small dataset's few values)


def measure_map(label_map: np.ndarray, min_area: int = 1, ignore_index: int = IGNORE_INDEX,
                fragment_share: float = FRAGMENT_SHARE) -> list[list[float]]:  # fmt: skip
    """The objects of one map as ``[class, area share, aspect, cx, cy]`` rows (class 0 and ignore left out).

    Args:
        label_map: ``H x W uint8`` class indices.
        min_area: smallest object kept, in pixels.
        fragment_share: components under this share of their class's largest one in the map are fragments,
            not objects (see :data:`core.labels.regions.FRAGMENT_SHARE`).
    """
    import cv2

    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise InvalidInput(f"a label map must be H x W, got shape {label_map.shape}")
    h, w = label_map.shape
    counts = np.bincount(label_map.ravel(), minlength=256)
    rows: list[list[float]] = []
    for cls in np.flatnonzero(counts):
        if cls in (0, ignore_index) or counts[cls] < min_area:
            continue
        n, _, stats, _ = cv2.connectedComponentsWithStats((label_map == cls).view(np.uint8), connectivity=8)
        floor = max(min_area, fragment_share * (stats[1:n, 4].max() if n > 1 else 0))
        for x, y, bw, bh, area in stats[1:n]:
            if area >= floor:
                rows.append([int(cls), area / (h * w), bw / bh, (x + bw / 2) / w, (y + bh / 2) / h])
    return rows


@dataclass
class ObjectSizes:
    """Observed objects, one row each (all arrays of length ``N``).

    Attributes:
        classes: ``N int32`` class indices.
        share: ``N float64`` area over the map's area, in ``(0, 1]``.
        aspect: ``N float64`` bounding-box width over height.
        cx, cy: ``N float64`` bounding-box centre over the map's width / height, in ``[0, 1]``.
        min_per_class: classes with fewer objects draw from every class's objects.
    """

    classes: np.ndarray
    share: np.ndarray
    aspect: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    min_per_class: int = MIN_PER_CLASS
    _rows: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[float]], min_per_class: int = MIN_PER_CLASS) -> ObjectSizes:
        """From ``[class, share, aspect, cx, cy]`` rows (see :func:`measure_map`)."""
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return cls(table[:, 0].astype(np.int32), table[:, 1], table[:, 2], table[:, 3], table[:, 4], min_per_class)

    @classmethod
    def from_regions(cls, regions: Iterable, min_per_class: int = MIN_PER_CLASS) -> ObjectSizes:
        """From regions (:class:`core.labels.regions.Region`) measured in their own source maps."""
        rows = []
        for r in regions:
            (x0, y0, x1, y1), (sh, sw) = r.bbox, r.source_shape
            rows.append([r.class_index, r.area / (sh * sw), (x1 - x0) / (y1 - y0), (x0 + x1) / 2 / sw, (y0 + y1) / 2 / sh])
        return cls.from_rows(rows, min_per_class)

    def __len__(self) -> int:
        return len(self.classes)

    def without(self, excluded: Iterable[int]) -> ObjectSizes:
        """The objects whose class is not in ``excluded`` (e.g. stuff classes)."""
        keep = ~np.isin(self.classes, list(excluded))
        return ObjectSizes(self.classes[keep], self.share[keep], self.aspect[keep], self.cx[keep], self.cy[keep],
                           self.min_per_class)  # fmt: skip

    def rows(self, cls: int) -> np.ndarray:
        """Row indices a class draws from: its own objects, or every object when it has too few."""
        if cls not in self._rows:
            own = np.flatnonzero(self.classes == cls)
            self._rows[cls] = own if len(own) >= self.min_per_class else np.arange(len(self.classes))
        return self._rows[cls]

    def draw(self, cls: int, rng: np.random.Generator, share_range: tuple[float, float] = (0.0, 1.0)) -> int:
        """One observed object's row for class ``cls``, among those whose share lies in ``share_range`` (all of
        the class's objects when none does).

        Raises:
            InvalidInput: no object was measured at all.
        """
        rows = self.rows(cls)
        if len(rows) == 0:
            raise InvalidInput("no object was measured in the dataset's label maps to draw sizes from")
        lo, hi = share_range
        if lo > 0 or hi < 1:
            inside = rows[(self.share[rows] >= lo) & (self.share[rows] <= hi)]
            rows = inside if len(inside) else rows
        return int(rows[int(rng.integers(len(rows)))])

    def draw_share(self, row: int, rng: np.random.Generator, share_range: tuple[float, float] = (0.0, 1.0)) -> float:
        """The area share of a drawn row, spread a little (log-normal) and kept within ``share_range``."""
        share = float(self.share[row]) * math.exp(float(rng.normal(0.0, SHARE_JITTER)))
        return min(max(share, share_range[0], 1e-6), share_range[1], 1.0)

    def describe(self) -> dict:
        """A small JSON summary: object count, classes and median share."""
        return {"objects": len(self), "classes": sorted({int(c) for c in self.classes}),
                "median_share": round(float(np.median(self.share)), 6) if len(self) else None}  # fmt: skip


def measure_store(store, min_area: int = 64, skipped=None) -> ObjectSizes:
    """Objects of every labelled sample of a store, each map's rows cached in the workspace index.

    Args:
        store: a :class:`core.store.DatasetStore`.
        skipped: a :class:`core.store.SkipReport` collecting samples that could not be read (they are
            left out; one bad map never stops the measurement).
    """
    from core.store import Problem

    kind = f"objects@{int(min_area)}/{FRAGMENT_SHARE}"
    rows: list[list[float]] = []
    for sample_id in store.labelled_ids():
        key = f"{store.root}#{sample_id}"
        try:
            revision = store.revision(sample_id)
            fact = store.index.get(key, kind, revision)
            if fact is None:
                label_map = store.label_map(sample_id, store.image_hw(sample_id))
                if label_map is None:
                    continue
                fact = {"rows": measure_map(label_map, min_area, store.classes.ignore_index)}
                store.index.put(key, kind, revision, fact)
        except StudioError as exc:
            if skipped is not None:
                skipped.add(Problem("", str(exc), sample_id))
            continue
        rows += fact["rows"]
    return ObjectSizes.from_rows(rows)


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup |F_a - F_b|`` of two samples (no p-value)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if len(a) == 0 or len(b) == 0:
        raise InvalidInput("the KS statistic needs two non-empty samples")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())
