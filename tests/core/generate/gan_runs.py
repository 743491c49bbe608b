"""Tiny GAN runs for the gan backend's tests: a toy dataset and runs trained in about half a second each.

The toy dataset has 3 classes (background, c1, c2) at 32 x 32; the first half of its maps lack c2, so that
recombination and class balancing have something to do.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def gan_toy_dataset(root: Path, count: int = 8, *, drop_class: int | None = 2, drop_share: float = 0.5) -> Path:
    """A toy VOC dataset (``count`` samples, 3 classes); the first ``drop_share`` of its maps have ``drop_class``
    painted as background (all of them with ``drop_share=1``)."""
    from core.io.images import load_label_map, save_label_map
    from core.train.toy import toy_classes, write_toy_dataset

    write_toy_dataset(root, count=count, size=32, num_classes=3, seed=0)
    if drop_class is not None:
        classes = toy_classes(3)
        paths = sorted((root / "SegmentationClass").glob("*.png"))
        for path in paths[: round(len(paths) * drop_share)]:
            label = load_label_map(path, classes)
            label[label == drop_class] = 0
            save_label_map(path, label, classes)
    return root


@contextlib.contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_run(kind: str, data: Path, out: Path, cache_dir: Path, **changes) -> Path:
    """Train a tiny run (16 px, width 8, 2 steps) of ``data`` into ``out``; returns ``out``."""
    from core.train.config import TrainConfig
    from core.train.trainer import train

    settings = {"size": 16, "steps": 2, "batch": 4, "width": 8, "z_dim": 8, "n_critic": 1, "sample_every": 0,
                "checkpoint_every": 100, "samples": 4, "device": "cpu"}  # fmt: skip
    settings.update(changes)
    with one_torch_thread():
        train(TrainConfig.for_kind(kind, str(data), **settings), out, cache_dir=cache_dir)
    return out
