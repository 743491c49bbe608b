"""Running several refinement methods on the same boxes and measuring how much they agree."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.refine.labelmap import compose_label_map
from core.refine.refiner import BoxRefiner, RefineSettings
from core.types import Box


@dataclass
class CompareResult:
    """Per-method label maps and their agreement.

    Attributes:
        names: the resolved method names, in the order given.
        label_maps: one ``H x W uint8`` label map per method.
        seconds: wall time per method (all boxes).
        iou: ``M x M`` IoU between methods over object pixels (label != 0, same class counted as agreement).
        disagreement: ``H x W bool`` pixels where the methods do not all agree.
    """

    names: list[str]
    label_maps: list[np.ndarray]
    seconds: list[float]
    iou: np.ndarray
    disagreement: np.ndarray


def label_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two label maps over object pixels: pixels agree when both hold the same non-zero class."""
    objects = (a != 0) | (b != 0)
    union = np.count_nonzero(objects)
    return float(np.count_nonzero(objects & (a == b)) / union) if union else 1.0


def compare_methods(
    refiner: BoxRefiner,
    image: np.ndarray,
    boxes: Sequence[Box],
    settings: Sequence[RefineSettings],
    *,
    overlap: str = "smaller",
) -> CompareResult:
    """Refine ``boxes`` with each of ``settings`` and compare the resulting label maps.

    Args:
        image: ``H x W x 3 uint8`` RGB.
    """
    names, maps, seconds = [], [], []
    for setting in settings:
        start = time.perf_counter()
        masks = [refiner.refine(image, box, setting) for box in boxes]
        maps.append(compose_label_map(image.shape[:2], list(boxes), masks, overlap=overlap))
        seconds.append(time.perf_counter() - start)
        names.append(setting.resolved_method)
    count = len(maps)
    iou = np.ones((count, count))
    for i in range(count):
        for j in range(i + 1, count):
            iou[i, j] = iou[j, i] = label_iou(maps[i], maps[j])
    disagreement = np.zeros(image.shape[:2], dtype=bool)
    for other in maps[1:]:
        disagreement |= other != maps[0]
    return CompareResult(names, maps, seconds, iou, disagreement)
