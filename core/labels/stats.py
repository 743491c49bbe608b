"""Class statistics of a set of label maps, streamed one map at a time (bounded memory).

Definitions (reported per class, background included unless excluded):

- **appearance frequency**: the share of label maps that contain the class (at least one pixel);
- **pixel share**: the class's pixels over all non-ignored pixels;
- **instances**: connected components (8-connectivity) of the class, with a histogram of their areas
  in powers-of-two bins (``[1, 2), [2, 4), ...`` pixels);
- **distribution entropy**: Shannon entropy ``H = -sum_c p_c log2 p_c`` of a class distribution, and
  ``H / log2(C)`` (1 = perfectly even over the ``C`` classes counted, 0 = one class only). It is given for
  the appearance counts (p_c = images containing c / sum over classes) and for the pixel counts;
- **class-imbalance ratio**: ``max_c n_c / min_c n_c`` over the classes that occur (n_c > 0), for the same
  two counts. Che et al. (2025) balance by appearance counts (how many images hold each class), so the
  appearance figures are the headline ones; a ratio of 1 means perfectly balanced.

Classes that never occur are listed with zeros and left out of the entropy and the ratio (they would make
the ratio infinite); their number is reported as ``missing_classes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from core.types import IGNORE_INDEX, ClassSet

SIZE_BINS = 32  # powers of two: [1, 2), [2, 4), ..., up to 2^32 pixels


def entropy(counts: Iterable[float]) -> tuple[float, float]:
    """``(H in bits, H / log2(C))`` of the distribution given by non-negative counts (zeros skipped)."""
    values = np.array([c for c in counts if c > 0], dtype=np.float64)
    if len(values) == 0:
        return 0.0, 0.0
    p = values / values.sum()
    h = float(-(p * np.log2(p)).sum())
    return h, (h / math.log2(len(values)) if len(values) > 1 else 1.0)


def imbalance_ratio(counts: Iterable[float]) -> float:
    """``max / min`` over the positive counts (1.0 for one class, 0.0 when none is positive)."""
    values = [c for c in counts if c > 0]
    return float(max(values) / min(values)) if values else 0.0


@dataclass
class ClassStats:
    """Streaming accumulator; feed it maps with :meth:`add`."""

    classes: ClassSet
    include_background: bool = True
    count_instances: bool = True
    maps: int = 0
    pixels: np.ndarray = field(default=None)  # type: ignore[assignment]
    appearances: np.ndarray = field(default=None)  # type: ignore[assignment]
    instances: np.ndarray = field(default=None)  # type: ignore[assignment]
    size_hist: np.ndarray = field(default=None)  # type: ignore[assignment]
    ignored_pixels: int = 0

    def __post_init__(self) -> None:
        n = len(self.classes)
        self.pixels = np.zeros(n, dtype=np.int64) if self.pixels is None else self.pixels
        self.appearances = np.zeros(n, dtype=np.int64) if self.appearances is None else self.appearances
        self.instances = np.zeros(n, dtype=np.int64) if self.instances is None else self.instances
        self.size_hist = np.zeros((n, SIZE_BINS), dtype=np.int64) if self.size_hist is None else self.size_hist

    def add(self, label_map: np.ndarray) -> None:
        """Count one ``H x W uint8`` label map (values outside the class set are ignored pixels)."""
        import cv2

        counts = np.bincount(np.asarray(label_map, dtype=np.uint8).ravel(), minlength=256)
        n = len(self.classes)
        self.pixels += counts[:n]
        self.ignored_pixels += int(counts[n:].sum())
        present = counts[:n] > 0
        self.appearances += present
        self.maps += 1
        if not self.count_instances:
            return
        for cls in np.flatnonzero(present):
            if cls == 0 and not self.include_background:
                continue
            count, _, comp_stats, _ = cv2.connectedComponentsWithStats(
                (label_map == cls).astype(np.uint8), connectivity=8
            )
            areas = comp_stats[1:, cv2.CC_STAT_AREA]
            self.instances[cls] += count - 1
            bins = np.minimum(np.floor(np.log2(np.maximum(areas, 1))).astype(int), SIZE_BINS - 1)
            np.add.at(self.size_hist[cls], bins, 1)

    def merge(self, other: ClassStats) -> ClassStats:
        """The statistics of both sets together (for parallel streams)."""
        return ClassStats(
            self.classes, self.include_background, self.count_instances, self.maps + other.maps,
            self.pixels + other.pixels, self.appearances + other.appearances, self.instances + other.instances,
            self.size_hist + other.size_hist, self.ignored_pixels + other.ignored_pixels,
        )  # fmt: skip

    def _counted(self) -> list[int]:
        return [i for i in range(len(self.classes)) if self.include_background or i != 0]

    def summary(self) -> dict:
        """Every figure as plain JSON values (see the module docstring for definitions)."""
        counted = self._counted()
        total_pixels = int(self.pixels[counted].sum())
        per_class = []
        for i in counted:
            per_class.append({
                "class": self.classes.names[i], "index": i, "images": int(self.appearances[i]),
                "appearance_frequency": round(self.appearances[i] / self.maps, 6) if self.maps else 0.0,
                "pixels": int(self.pixels[i]),
                "pixel_share": round(self.pixels[i] / total_pixels, 6) if total_pixels else 0.0,
                "instances": int(self.instances[i]),
                "instance_size_hist": {f"2^{b}": int(v) for b, v in enumerate(self.size_hist[i]) if v},
            })  # fmt: skip
        app = [int(self.appearances[i]) for i in counted]
        pix = [int(self.pixels[i]) for i in counted]
        h_app, hn_app = entropy(app)
        h_pix, hn_pix = entropy(pix)
        return {
            "maps": self.maps, "classes": len(counted), "include_background": self.include_background,
            "missing_classes": sum(1 for c in app if c == 0), "ignored_pixels": self.ignored_pixels,
            "entropy_appearance": round(h_app, 6), "entropy_appearance_normalised": round(hn_app, 6),
            "entropy_pixels": round(h_pix, 6), "entropy_pixels_normalised": round(hn_pix, 6),
            "imbalance_ratio_appearance": round(imbalance_ratio(app), 6),
            "imbalance_ratio_pixels": round(imbalance_ratio(pix), 6),
            "per_class": per_class,
        }  # fmt: skip


def dataset_stats(
    dataset, *, include_background: bool = False, count_instances: bool = True, progress=None, cancel=None,
    skipped=None,
) -> ClassStats:
    """Stream a dataset's usable label maps (a :class:`core.store.DatasetStore`) into :class:`ClassStats`.

    Only one map is in memory at a time. Samples without a label map are not counted (unlabelled is not
    background); maps that cannot be used (unreadable, wrong size, unknown values) are skipped and listed
    in ``skipped`` (a :class:`core.store.SkipReport`) and in the store's problems.
    """
    from core.errors import StudioError
    from core.progress import track
    from core.store import Problem

    stats = ClassStats(dataset.classes, include_background, count_instances)
    for sample_id in track(dataset.labelled_ids(), progress=progress, cancel=cancel, message="statistics"):
        try:
            label_map = dataset.label_map(sample_id)
        except StudioError as exc:
            if skipped is not None:
                skipped.add(Problem("", str(exc), sample_id))
            continue
        if label_map is not None:
            stats.add(label_map)
    return stats


def label_classes_of(
    label_map: np.ndarray, ignore_index: int = IGNORE_INDEX, include_background: bool = False
) -> set[int]:
    """The classes present in one map."""
    values = set(int(v) for v in np.unique(label_map))
    values.discard(ignore_index)
    if not include_background:
        values.discard(0)
    return values
