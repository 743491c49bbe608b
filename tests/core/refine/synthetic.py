"""Synthetic images with known ground truth for refinement tests."""

from __future__ import annotations

import numpy as np

from core.types import Box


def ellipse_scene(height=120, width=160, seed=0, fg=(200, 60, 50), bg=(60, 110, 170), noise=12.0):
    """An ellipse of one colour on a noisy background of another.

    Returns:
        ``(image, truth, box)``: ``H x W x 3 uint8``, ``H x W bool`` and a box 8 px loose around the ellipse.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx, ry, rx = height * 0.5, width * 0.5, height * 0.3, width * 0.28
    truth = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image = np.where(truth[..., None], np.array(fg), np.array(bg)).astype(np.float64)
    image += rng.normal(0, noise, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(truth)
    box = Box(int(xs.min()) - 8, int(ys.min()) - 8, int(xs.max()) + 9, int(ys.max()) + 9, label=1)
    return image, truth, box


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0
