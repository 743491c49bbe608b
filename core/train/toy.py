"""A toy dataset for training tests and benchmarks: each class one fixed colour with noise, random blob layouts.

Class 0 fills the background; every other class is drawn as a few random ellipses. Written in VOC layout
(PNG images, palette label maps, ``classes.json``), deterministic for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.types import ClassSet

TOY_COLORS = ((30, 30, 30), (220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40))


def toy_classes(num_classes: int = 3) -> ClassSet:
    """The toy class set: ``background`` then ``c1``, ``c2``, ... in :data:`TOY_COLORS`."""
    if not 2 <= num_classes <= len(TOY_COLORS):
        raise InvalidInput(f"toy datasets have 2 to {len(TOY_COLORS)} classes, got {num_classes}")
    names = ["background"] + [f"c{i}" for i in range(1, num_classes)]
    doc = {"name": "toy", "classes": [{"id": i, "name": n, "color": list(TOY_COLORS[i])} for i, n in enumerate(names)]}
    return ClassSet.from_json(doc)


def toy_sample(rng: np.random.Generator, size: int = 32, num_classes: int = 3, noise: float = 12.0,
               ignore_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One ``(size x size x 3 uint8 image, size x size uint8 label map)``: blobs of classes ``1..C-1`` on class 0,
    each pixel its class's colour plus Gaussian noise of std ``noise``; with ``ignore_share`` > 0, one random
    rectangle of about that share is marked 255 (its pixels keep their colours)."""
    import cv2

    labels = np.zeros((size, size), np.uint8)
    for cls in range(1, num_classes):
        for _ in range(int(rng.integers(1, 3))):
            centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            axes = (int(rng.integers(size // 8, size // 3 + 1)), int(rng.integers(size // 8, size // 3 + 1)))
            cv2.ellipse(labels, centre, (max(1, axes[0]), max(1, axes[1])), float(rng.uniform(0, 180)), 0, 360, cls, -1)
    palette = np.array(TOY_COLORS[:num_classes], np.float64)
    image = palette[labels] + rng.normal(0, noise, (size, size, 3))
    if ignore_share > 0:
        side = max(1, int(round(size * np.sqrt(ignore_share))))
        y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
        labels[y : y + side, x : x + side] = 255
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def write_toy_dataset(root: str | Path, count: int = 16, size: int = 32, num_classes: int = 3, seed: int = 0,
                      noise: float = 12.0, ignore_share: float = 0.0) -> Path:  # fmt: skip
    """Write ``count`` toy samples under ``root`` in VOC layout (``JPEGImages/*.png``, ``SegmentationClass/*.png``,
    ``classes.json``) and return ``root``."""
    from core.io.images import save_image, save_label_map

    root = Path(root)
    if count < 1:
        raise InvalidInput(f"count must be at least 1, got {count}")
    rng = np.random.default_rng(seed)
    cs = toy_classes(num_classes)
    for i in range(count):
        image, labels = toy_sample(rng, size, num_classes, noise, ignore_share)
        save_image(root / "JPEGImages" / f"toy_{i:04d}.png", image)
        save_label_map(root / "SegmentationClass" / f"toy_{i:04d}.png", labels, cs)
    (root / "classes.json").write_text(json.dumps(cs.to_json(), indent=2) + "\n")
    return root
