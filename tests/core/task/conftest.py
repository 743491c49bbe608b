"""Segmenter tests: one torch thread (tiny networks run faster without thread contention), toy data, one shared run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.core.generate.gan_runs import one_torch_thread  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def tiny_config(data, **kw):
    """A CPU-sized segmenter config: 32 x 32, width 8, depth 2, no augmentation."""
    from core.task.trainer import SegmenterConfig

    base = {"split": (8, 2, 2), "size": 32, "steps": 60, "batch": 4, "lr": 1e-2, "width": 8, "depth": 2,
            "standard_aug": "none", "val_every": 20, "checkpoint_every": 20, "log_every": 5, "device": "cpu"}  # fmt: skip
    base.update(kw)
    return SegmenterConfig(data=str(data), **base)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A 3-class toy dataset (12 samples, 32 x 32, with ignore rectangles)."""
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("task_toy") / "toy", count=12, size=32, num_classes=3, seed=0,
                             ignore_share=0.05)  # fmt: skip


@pytest.fixture(scope="session")
def trained_run(toy_root, tmp_path_factory):
    """A run trained to overfit the toy data: ``(run folder, training result, workspace folder)``."""
    from core.task.trainer import train_segmenter

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = tmp_path_factory.mktemp("task_run")
        result = train_segmenter(tiny_config(toy_root), base / "run", cache_dir=base / "cache")
    finally:
        torch.set_num_threads(before)
    return base / "run", result, base / "cache"
