"""A robot user for interactive segmentation: simulated correction clicks and the NoC evaluation.

The protocol of interactive segmentation papers (RITM, Sofiiuk et al. 2022; SimpleClick, Liu et al. 2023):
after each prediction, the robot looks at the errors against the ground truth, takes the **largest error
region** (a connected component, 8-neighbour, of the false negatives or of the false positives; ignore
pixels excluded) and clicks at its **interior point**: the maximum of the distance transform of the region,
padded so that the image border counts as boundary (ties: the first in row-major order). A click in a
false negative is positive ("object"), in a false positive negative ("not object"). Everything is
deterministic.

Differences from the papers, both forced by boxes: false negatives outside every box are not clickable (a
box's mask never leaves its box), and a click is a disk of ``radius`` pixels, shrunk where the region is
thinner so that the disk stays inside the error region.

:func:`evaluate_with_clicks` runs the robot for ``K`` clicks on every image of a folder with ground truth
and reports the mean IoU after 0..K clicks and NoC@85 / NoC@90: the clicks needed to reach that IoU,
``K`` counted for an image that never does (so NoC is capped at ``K``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.progress import CancelToken, ProgressFn, track
from core.refine.corrections import Stroke
from core.refine.evaluate import iou_and_box_error
from core.refine.refiner import BoxRefiner, RefineSettings
from core.store import DatasetStore, SkipReport
from core.types import Box

MAX_CLICKS = 100
CLICK_RADIUS = 5  # RITM encodes a click as a disk of radius 5
NOC_THRESHOLDS = (0.85, 0.90)


@dataclass(frozen=True)
class Click:
    """One simulated click.

    Attributes:
        x, y: pixel position (column, row).
        positive: ``True`` in a false negative (object), ``False`` in a false positive (not object).
        radius: disk radius in pixels (at most the requested radius, less where the region is thinner).
        region_area: pixels in the error region clicked.
        depth: the distance transform's value at the click (pixels to the region's border).
    """

    x: int
    y: int
    positive: bool
    radius: int
    region_area: int
    depth: float

    def stroke(self) -> Stroke:
        """The click as a correction stroke."""
        return Stroke.click(self.x, self.y, self.positive, self.radius)


def _truth_masks(truth: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    if truth.dtype == bool:
        return truth, np.ones(truth.shape, bool)
    valid = truth != ignore_index
    return (truth != 0) & valid, valid


def next_click(
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    clickable: np.ndarray | None = None,
    ignore_index: int = 255,
    radius: int = CLICK_RADIUS,
) -> Click | None:
    """The robot's next click, or ``None`` when no error is left.

    Args:
        prediction: ``H x W bool`` current mask.
        truth: ``H x W uint8`` labels (non-zero = object, ``ignore_index`` ignored) or ``H x W bool``.
        clickable: ``H x W bool`` where clicks may go (the union of the boxes), or ``None`` for everywhere.
        radius: largest disk radius of a click.

    Raises:
        InvalidInput: shapes differ, or a negative radius.
    """
    import cv2

    prediction = np.asarray(prediction, dtype=bool)
    positive, valid = _truth_masks(truth, ignore_index)
    if prediction.shape != positive.shape or (clickable is not None and clickable.shape != positive.shape):
        raise InvalidInput(
            f"prediction {prediction.shape}, truth {positive.shape} and clickable masks must have one shape"
        )
    if radius < 0:
        raise InvalidInput(f"click radius must be >= 0, got {radius}")
    allowed = valid if clickable is None else valid & clickable
    best: tuple[int, bool, np.ndarray] | None = None
    for is_positive, errors in ((True, positive & ~prediction & allowed), (False, prediction & ~positive & allowed)):
        if not errors.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(errors.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        index = int(np.argmax(areas))  # first of the largest
        if best is None or areas[index] > best[0]:  # ties: false negatives (looked at first) win
            best = (int(areas[index]), is_positive, labels == index + 1)
    if best is None:
        return None
    area, is_positive, region = best
    padded = np.pad(region, 1).astype(np.uint8)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    flat = int(np.argmax(depth))
    y, x = divmod(flat, region.shape[1])
    value = float(depth[y, x])
    return Click(int(x), int(y), is_positive, int(min(radius, max(0, int(np.ceil(value)) - 1))), area, value)


def boxes_for_click(click: Click, boxes: list[Box], masks: list[np.ndarray]) -> list[int]:
    """Which boxes a click corrects: a positive click goes to the smallest box containing it; a negative
    click to every box whose mask holds the pixel (each of those masks must lose it)."""
    if click.positive:
        holding = [i for i, b in enumerate(boxes) if b.x0 <= click.x < b.x1 and b.y0 <= click.y < b.y1]
        return [min(holding, key=lambda i: (boxes[i].area, i))] if holding else []
    return [i for i, m in enumerate(masks) if m[click.y, click.x]]


@dataclass
class ClickScore:
    """One image: ``ious[k]`` after ``k`` clicks (``k = 0..K``), the clicks made, re-cut seconds per click,
    and the seconds of the boxes' first refinement."""

    name: str
    ious: list[float]
    clicks: list[Click]
    recut_seconds: list[float]
    box_seconds: list[float]

    def noc(self, threshold: float) -> int:
        """Clicks needed to reach ``threshold`` IoU (``K`` when never reached)."""
        for k, value in enumerate(self.ious):
            if value >= threshold:
                return k
        return len(self.ious) - 1


@dataclass
class ClickReport:
    """The robot-user evaluation of one method over a folder."""

    method: str
    clicks: int
    radius: int
    scores: list[ClickScore] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)

    def curve(self) -> list[float]:
        """Mean IoU over images after 0..K clicks."""
        return [float(np.mean([s.ious[k] for s in self.scores])) for k in range(self.clicks + 1)]

    def summary(self) -> dict:
        """``{method, n, clicks, click_radius, miou_curve, noc85, noc90, failed85, failed90, recut_median,
        recut_mean, box_sec_median, skipped}`` (``failed``: images that never reached the IoU within K)."""
        recuts = [t for s in self.scores for t in s.recut_seconds]
        boxes = [t for s in self.scores for t in s.box_seconds]
        out: dict = {"method": self.method, "n": len(self.scores), "clicks": self.clicks, "click_radius": self.radius,
                     "miou_curve": [round(v, 4) for v in self.curve()] if self.scores else []}  # fmt: skip
        for threshold in NOC_THRESHOLDS:
            tag = f"{round(100 * threshold)}"
            nocs = [s.noc(threshold) for s in self.scores]
            out[f"noc{tag}"] = round(float(np.mean(nocs)), 3) if nocs else None
            out[f"failed{tag}"] = sum(1 for s in self.scores if max(s.ious) < threshold)
        out["recut_median"] = round(float(statistics.median(recuts)), 4) if recuts else None
        out["recut_mean"] = round(float(np.mean(recuts)), 4) if recuts else None
        out["box_sec_median"] = round(float(statistics.median(boxes)), 4) if boxes else None
        out["skipped"] = [p.to_json() for p in self.skipped.skipped]
        return out


def click_session(
    refiner: BoxRefiner,
    image: np.ndarray,
    boxes: list[Box],
    truth: np.ndarray,
    settings: RefineSettings,
    clicks: int,
    *,
    ignore_index: int = 255,
    radius: int = CLICK_RADIUS,
    name: str = "",
) -> ClickScore:
    """Run the robot user on one image: refine its boxes, then ``clicks`` corrections.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        boxes: the image's boxes (clipped to it).
        truth: ``H x W uint8`` labels (non-zero = object, ``ignore_index`` ignored).
    """
    height, width = image.shape[:2]
    boxes = [b.clip(width, height) for b in boxes]
    in_boxes = np.zeros((height, width), dtype=bool)
    for box in boxes:
        in_boxes |= box.mask(height, width)
    strokes: list[list[Stroke]] = [[] for _ in boxes]
    masks, box_seconds = [], []
    for box in boxes:
        start = time.perf_counter()
        masks.append(refiner.refine(image, box, settings))
        box_seconds.append(time.perf_counter() - start)

    def score() -> float:
        prediction = np.logical_or.reduce(masks) if masks else np.zeros((height, width), bool)
        return iou_and_box_error(prediction, truth, in_boxes, ignore_index)[0]

    ious, made, recuts = [score()], [], []
    for _ in range(clicks):
        prediction = np.logical_or.reduce(masks)
        click = next_click(prediction, truth, clickable=in_boxes, ignore_index=ignore_index, radius=radius)
        if click is None:  # nothing left to correct
            ious.append(ious[-1])
            continue
        made.append(click)
        start = time.perf_counter()
        for index in boxes_for_click(click, boxes, masks):
            strokes[index].append(click.stroke())
            masks[index] = refiner.refine(image, boxes[index], settings, strokes[index])
        recuts.append(time.perf_counter() - start)
        ious.append(score())
    return ClickScore(name, ious, made, recuts, box_seconds)


def evaluate_with_clicks(
    root: str | Path | DatasetStore,
    settings: RefineSettings,
    clicks: int = 5,
    *,
    radius: int = CLICK_RADIUS,
    limit: int | None = None,
    names: Sequence[str] | None = None,
    refiner: BoxRefiner | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> ClickReport:
    """The robot-user evaluation (module docstring) of one method over a folder with ground truth.

    Seconds are wall time in this process, after one untimed warm-up image (box and one click); a re-cut's
    time covers every box the click corrects.

    Args:
        root: a folder in the ``boxes.csv`` format (or any layout with label maps and boxes), or a store.
        clicks: ``K``, clicks per image (0..100).
        radius: largest click radius in pixels.
        limit: only the first ``limit`` samples (sorted by name).
        names: only the samples with these ids (a split half, say).

    Raises:
        InvalidInput: bad ``clicks`` / ``limit`` / ``radius``, or no sample has both boxes and ground truth.
    """
    if not 0 <= clicks <= MAX_CLICKS:
        raise InvalidInput(f"--clicks must be 0..{MAX_CLICKS}, got {clicks}")
    if limit is not None and limit < 1:
        raise InvalidInput(f"--limit must be at least 1, got {limit}")
    if not 0 <= radius <= 50:
        raise InvalidInput(f"click radius must be 0..50 pixels, got {radius}")
    dataset = root if isinstance(root, DatasetStore) else DatasetStore(root)
    labelled = set(dataset.labelled_ids())
    wanted = None if names is None else set(names)
    samples = [s for s in dataset.samples if s.boxes and s.id in labelled and (wanted is None or s.id in wanted)][
        :limit
    ]
    if not samples:
        raise InvalidInput(
            f"{dataset.root}: no sample has both boxes and a usable ground-truth mask to evaluate against"
        )
    refiner = refiner or BoxRefiner()
    report = ClickReport(settings.resolved_method, clicks, radius)
    ignore = dataset.classes.ignore_index
    warmed = False
    readable = dataset.each([s.id for s in samples], skipped=report.skipped)
    for data in track(readable, progress=progress, cancel=cancel, message="clicking", total=len(samples)):
        if not warmed:  # warm-up, untimed: imports and first-use set-up of the cut and the re-cut
            click_session(refiner, data.image, list(data.sample.boxes), data.label_map, settings, min(clicks, 1),
                          ignore_index=ignore, radius=radius)  # fmt: skip
            refiner = BoxRefiner(refiner.registry)  # fresh caches: no timed box may be a cache hit
            warmed = True
        boxes = list(data.sample.boxes)
        score = click_session(refiner, data.image, boxes, data.label_map, settings, clicks, ignore_index=ignore,
                              radius=radius, name=data.sample.id)  # fmt: skip
        report.scores.append(score)
    if not report.scores:
        raise InvalidInput(f"{dataset.root}: no sample could be read; {report.skipped.summary()}")
    return report
