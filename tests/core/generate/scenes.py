"""A small synthetic street-scene dataset in VOC layout with class roles, for size-distribution checks.

Sky, building and road are stuff; car, person and dog are things with class-typical sizes (log-normal area
shares), aspects and heights (cars low, people a little higher). Written once per folder, deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.io.images import save_image, save_label_map
from core.types import ClassSet

NAMES = ("background", "sky", "building", "road", "car", "person", "dog")
COLORS = ((0, 0, 0), (70, 130, 180), (70, 70, 70), (128, 64, 128), (0, 0, 142), (220, 20, 60), (250, 170, 30))
STUFF = ("sky", "building", "road")
#            class  median share  log sigma  aspect (w/h)  centre y   count range
OBJECTS = ((4, 0.030, 0.7, 1.9, 0.72, (1, 3)), (5, 0.012, 0.6, 0.42, 0.62, (0, 3)), (6, 0.006, 0.5, 1.3, 0.78, (0, 2)))


def classes() -> ClassSet:
    doc = {"name": "streets", "classes": [{"id": i, "name": n, "color": list(c), **({"role": "stuff"} if n in STUFF else {})}
                                          for i, (n, c) in enumerate(zip(NAMES, COLORS, strict=True))]}  # fmt: skip
    return ClassSet.from_json(doc)


def scene(rng: np.random.Generator, shape=(384, 512)) -> tuple[np.ndarray, np.ndarray]:
    """One ``(H x W x 3 uint8 image, H x W uint8 label map)`` street scene."""
    import cv2

    h, w = shape
    labels = np.zeros(shape, np.uint8)
    horizon = int(h * rng.uniform(0.3, 0.4))
    labels[:horizon] = 1
    for x in range(0, w, 64):  # buildings of varying height along the horizon
        top = int(horizon - h * rng.uniform(0.05, 0.25))
        labels[top : horizon + int(h * 0.12), x : x + 64] = 2
    labels[horizon + int(h * 0.12) :] = 3
    for cls, median, sigma, aspect, cy, (lo, hi) in OBJECTS:
        for _ in range(int(rng.integers(lo, hi + 1))):
            share = min(0.25, median * float(np.exp(rng.normal(0, sigma))))
            a = aspect * float(np.exp(rng.normal(0, 0.15)))
            bw, bh = np.sqrt(share * h * w * a * 4 / np.pi), np.sqrt(share * h * w / a * 4 / np.pi)
            centre = (int(rng.uniform(0.05, 0.95) * w), int(min(0.97, max(0.3, cy + rng.normal(0, 0.06))) * h))
            cv2.ellipse(labels, centre, (max(3, int(bw / 2)), max(3, int(bh / 2))), 0, 0, 360, int(cls), -1)
    palette = np.array(COLORS, np.int16)
    image = palette[labels] + rng.normal(0, 12, shape + (3,)).astype(np.int16)
    image += np.linspace(-20, 20, w, dtype=np.int16)[None, :, None]
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_streets(root: Path, count: int = 40, seed: int = 0) -> Path:
    """Write ``count`` scenes as a VOC-layout dataset with a ``classes.json`` (roles included) under ``root``."""
    root = Path(root)
    if (root / "classes.json").is_file():
        return root
    rng = np.random.default_rng(seed)
    cs = classes()
    for i in range(count):
        image, labels = scene(rng)
        save_image(root / "JPEGImages" / f"street_{i:03d}.jpg", image)
        save_label_map(root / "SegmentationClass" / f"street_{i:03d}.png", labels, cs)
    (root / "classes.json").write_text(json.dumps(cs.to_json(), indent=2) + "\n")
    return root


def hidden_shares(before: np.ndarray, after: np.ndarray, stuff) -> list[float]:
    """Share of each object of ``before`` (a connected component of a thing class: not 0, 255 or ``stuff``)
    whose label changed in ``after`` (both ``H x W uint8``)."""
    import cv2

    out = []
    for cls in np.unique(before):
        if cls in (0, 255) or cls in stuff:
            continue
        n, comps = cv2.connectedComponents((before == cls).astype(np.uint8), connectivity=8)
        out += [float((after[comps == k] != cls).mean()) for k in range(1, n)]
    return out
