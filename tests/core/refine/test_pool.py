"""Refining in worker processes gives the same masks as in-process, and survives a worker's death."""

from __future__ import annotations

import os
import signal

import numpy as np

from core.refine.pool import PooledRefiner, WorkerPool
from core.refine.refiner import BoxRefiner, RefineSettings
from core.store import DatasetStore
from core.types import Box
from tests.conftest import SAMPLES

BOXES = [Box(40, 20, 380, 500, 15), Box(100, 100, 300, 300, 15), Box(0, 0, 200, 512, 15)]


def test_workers_cut_the_same_masks_as_this_process_and_keep_images():
    image = DatasetStore(SAMPLES).image("astronaut")
    pooled = PooledRefiner(workers=2)
    pooled.pool = WorkerPool(2)  # a private pool, so the test can break it
    try:
        for method in ("grabcut-fast", "densecrf"):
            for box in BOXES:
                here = BoxRefiner().refine(image, box, RefineSettings(method))
                there = pooled.refine(image, box, RefineSettings(method))
                assert np.array_equal(here, there), (method, box)
        assert any(pooled.pool.worker_pids())
        held = [len(worker.images) for worker in pooled.pool._workers]
        assert max(held) == 1 and sum(held) >= 1  # the image crossed once per worker, not once per box
    finally:
        pooled.pool.reset()


def test_a_dead_worker_falls_back_to_this_process_and_the_pool_is_rebuilt():
    image = DatasetStore(SAMPLES).image("chelsea")
    pooled = PooledRefiner(workers=1)
    pooled.pool = WorkerPool(1)
    try:
        pooled.refine(image, Box(10, 10, 200, 200, 8))
        for pid in pooled.pool.worker_pids():
            os.kill(pid, signal.SIGKILL)
        mask = pooled.refine(image, Box(20, 20, 220, 220, 8))
        assert mask[20:220, 20:220].any() and not mask[:20].any()
        again = pooled.refine(image, Box(30, 30, 230, 230, 8))  # a fresh pool
        assert again[30:230, 30:230].any()
    finally:
        pooled.pool.reset()
