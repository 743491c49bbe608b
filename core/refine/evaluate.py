"""Measuring box -> mask quality and speed on a folder with ground-truth masks.

Mean IoU is computed per image over non-ignored pixels (the union of the image's box masks against
its non-zero, non-ignore ground truth), then averaged over images. "Error inside the box" is the share
of non-ignored pixels inside the image's boxes whose label is wrong (the metric of box-based GrabCut
papers). Seconds are wall time per box in this process, after one untimed warm-up box (imports and
first-use set-up are not a per-box cost).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.progress import CancelToken, ProgressFn, track
from core.refine.refiner import BoxRefiner, RefineSettings
from core.store import DatasetStore, SkipReport


@dataclass
class SampleScore:
    """One image's scores: ``iou``, ``err_in_box`` (fractions) and per-box ``seconds``."""

    name: str
    iou: float
    err_in_box: float
    seconds: list[float]


@dataclass
class EvalReport:
    """Aggregated scores of one method over a folder."""

    method: str
    scores: list[SampleScore] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)

    @property
    def box_seconds(self) -> list[float]:
        return [s for score in self.scores for s in score.seconds]

    def summary(self) -> dict:
        """``{method, n, miou, err_in_box, sec_mean, sec_median}``."""
        seconds = self.box_seconds
        return {
            "method": self.method,
            "n": len(self.scores),
            "miou": round(float(np.mean([s.iou for s in self.scores])), 4) if self.scores else None,
            "err_in_box": round(float(np.mean([s.err_in_box for s in self.scores])), 4) if self.scores else None,
            "sec_mean": round(float(np.mean(seconds)), 4) if seconds else None,
            "sec_median": round(float(statistics.median(seconds)), 4) if seconds else None,
            "skipped": [p.to_json() for p in self.skipped.skipped],
        }


def iou_and_box_error(
    prediction: np.ndarray, truth: np.ndarray, in_boxes: np.ndarray, ignore_index: int = 255
) -> tuple[float, float]:
    """IoU of ``prediction`` against ``truth`` foreground and the error rate inside ``in_boxes``.

    Args:
        prediction: ``H x W bool``.
        truth: ``H x W uint8`` labels (non-zero = foreground, ``ignore_index`` ignored).
        in_boxes: ``H x W bool``, the union of the boxes.
    """
    valid = truth != ignore_index
    positive = (truth != 0) & valid
    union = np.count_nonzero((prediction | positive) & valid)
    iou = np.count_nonzero(prediction & positive & valid) / union if union else 1.0
    judged = valid & in_boxes
    err = np.count_nonzero((prediction != positive) & judged) / max(np.count_nonzero(judged), 1)
    return float(iou), float(err)


def evaluate_boxes(
    root: str | Path,
    settings: RefineSettings,
    *,
    limit: int | None = None,
    refiner: BoxRefiner | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> EvalReport:
    """Refine every box of a folder with ground truth and score the results.

    Args:
        root: a folder in the ``boxes.csv`` format (or any layout with label maps and boxes).
        limit: only the first ``limit`` samples (sorted by name).

    Raises:
        InvalidInput: the folder has no sample with both boxes and a ground-truth mask.
    """
    if limit is not None and limit < 1:
        raise InvalidInput(f"--limit must be at least 1, got {limit}")
    dataset = root if isinstance(root, DatasetStore) else DatasetStore(root)
    labelled = set(dataset.labelled_ids())
    samples = [s for s in dataset.samples if s.boxes and s.id in labelled][:limit]
    if not samples:
        raise InvalidInput(f"{dataset.root}: no sample has both boxes and a usable ground-truth mask to evaluate against")
    refiner = refiner or BoxRefiner()
    report = EvalReport(settings.resolved_method)
    warmed = False
    readable = dataset.each([s.id for s in samples], skipped=report.skipped)
    for data in track(readable, progress=progress, cancel=cancel, message="evaluating", total=len(samples)):
        sample, image, truth = data.sample, data.image, data.label_map
        if not warmed:
            refiner.refine(image, sample.boxes[0], settings)  # warm-up, untimed
            refiner = BoxRefiner(refiner.registry)  # fresh caches: no timed box may be a cache hit
            warmed = True
        prediction = np.zeros(image.shape[:2], dtype=bool)
        in_boxes = np.zeros(image.shape[:2], dtype=bool)
        seconds = []
        for box in sample.boxes:
            start = time.perf_counter()
            prediction |= refiner.refine(image, box, settings)
            seconds.append(time.perf_counter() - start)
            in_boxes |= box.mask(*image.shape[:2])
        iou, err = iou_and_box_error(prediction, truth, in_boxes, dataset.classes.ignore_index)
        report.scores.append(SampleScore(sample.id, iou, err, seconds))
    if not report.scores:
        raise InvalidInput(f"{dataset.root}: no sample could be read; {report.skipped.summary()}")
    return report
