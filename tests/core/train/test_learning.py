"""Learning tests: after a short CPU training on the toy dataset (each class one colour with noise), the generators
draw each class in its colour. At initialisation the images are near grey for every class and the pair labels
are noise, so none of these can pass by accident: every class must be nearest its own colour by a clear margin,
and pair samples must use several classes.
"""

from __future__ import annotations

import numpy as np

from core.train.config import TrainConfig
from core.train.generation import load_run
from core.train.toy import TOY_COLORS, toy_sample, write_toy_dataset
from core.train.trainer import train

# A class's mean colour lies at most MARGIN times as far from its colour as from any other class's colour.
# Measured over seeds 0-3: label2image at most 0.14; pair at most 0.43 (the small red blobs, whose boundary pixels
# pull their mean), and pair's per-pixel agreement between nearest colour and own label 0.82-0.85.
MARGIN = 0.5
PAIR_MARGIN = 0.6
PAIR_AGREEMENT = 0.7


def settings(kind: str, root, **kw) -> TrainConfig:
    base = {"size": 16, "batch": 8, "width": 16, "sample_every": 0, "checkpoint_every": 10**6, "eval_samples": 0}
    base.update(kw)
    return TrainConfig.for_kind(kind, str(root), **base)


def check_class_colours(
    images, label_maps, num_classes: int, min_share: float = 0.0, margin: float = MARGIN
) -> list[int]:
    """Assert each class's mean generated colour is clearly nearest its toy colour; returns the classes seen."""
    colours = np.array(TOY_COLORS[:num_classes], np.float64)
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    labels = np.concatenate([m.reshape(-1) for m in label_maps])
    seen = []
    for cls in range(num_classes):
        share = float((labels == cls).mean())
        if share <= min_share:
            continue
        mean = pixels[labels == cls].mean(0)
        dist = np.linalg.norm(colours - mean, axis=1)
        others = np.delete(dist, cls)
        assert dist[cls] < margin * others.min(), (cls, share, mean.round(), dist.round())
        seen.append(cls)
    return seen


def test_label2image_draws_each_class_in_its_colour(tmp_path):
    """The kind's defaults (LabelMix, DiffAugment, EMA), small: 4 classes at 16 px, unseen layouts."""
    root = write_toy_dataset(tmp_path / "toy", count=32, size=16, num_classes=4, seed=3)
    train(settings("label2image", root, steps=120, z_dim=8, lr_g=4e-4, ema_decay=0.9), tmp_path / "run",
          cache_dir=tmp_path / "ws")  # fmt: skip
    model = load_run(tmp_path / "run")
    rng = np.random.default_rng(99)
    maps = [toy_sample(rng, 16, 4)[1] for _ in range(12)]
    images = model.generate_from_maps(maps, seed=0)
    assert check_class_colours(images, maps, 4) == [0, 1, 2, 3]


def test_pair_samples_draw_their_own_labels_in_their_colours(tmp_path):
    """WGAN-GP pair (n_critic 5, DiffAugment): most pixels of a generated sample are nearest the colour of their own
    generated label, each class's mean colour is clearly nearest its colour, and the samples use at least two
    classes (each over 5 % of the pixels)."""
    root = write_toy_dataset(tmp_path / "toy", count=32, size=16, num_classes=3, seed=5)
    train(settings("pair", root, steps=120, z_dim=16, lr_g=1e-3, lr_d=1e-3, ema_decay=0.9), tmp_path / "run",
          cache_dir=tmp_path / "ws")  # fmt: skip
    model = load_run(tmp_path / "run")
    pairs = model.generate_pairs(24, seed=1)
    images, maps = [p[0] for p in pairs], [p[1] for p in pairs]
    colours = np.array(TOY_COLORS[:3], np.float64)
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    nearest = np.linalg.norm(pixels[:, None] - colours[None], axis=2).argmin(1)
    agreement = float((nearest == np.concatenate([m.reshape(-1) for m in maps])).mean())
    assert agreement >= PAIR_AGREEMENT, agreement
    seen = check_class_colours(images, maps, 3, min_share=0.05, margin=PAIR_MARGIN)
    assert len(seen) >= 2, seen
