"""Refining boxes in worker processes.

The graph cuts and colour models of the classic methods hold Python's global interpreter lock for much of
their run, so threads serving several people at once share one core (measured: two threads refine only
1.37x faster than one). :class:`PooledRefiner` sends the classic methods to a few worker processes, one
box at a time, so every core cuts. Each worker keeps the images it has seen (by content hash), so an image
crosses to a worker once, not with every box. SAM runs in the calling process (its model is loaded there).

Workers start on first use (never at import or app build), with the ``spawn`` method (forking a threaded
server is unsafe). If a worker dies, the box is refined in the calling process and the pool is rebuilt on
the next call.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from core.refine.corrections import Stroke
from core.refine.refiner import BoxRefiner, RefineSettings, _PreparedImage
from core.types import Box

POOLED_METHODS = ("grabcut-fast", "grabcut", "densecrf", "grabcut+crf")
IMAGES_PER_WORKER = 4


def default_workers() -> int:
    """``SEGSTUDIO_REFINE_WORKERS`` when set (0 = refine in the calling process), else one per core up to 4
    (none on a single core, where a process gains nothing)."""
    raw = os.environ.get("SEGSTUDIO_REFINE_WORKERS", "").strip()
    if raw:
        return max(0, int(raw))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 2 else min(cores, 4)


# ---- inside a worker ---------------------------------------------------------------------------------

_WORKER_REFINER: BoxRefiner | None = None
_WORKER_IMAGES: OrderedDict[str, np.ndarray] = OrderedDict()


class _ImageUnknown(Exception):
    """The worker no longer holds this image: send it again."""


def _worker_refine(
    key: str, rgb: np.ndarray | None, box: Box, settings: RefineSettings, strokes: tuple[Stroke, ...] = ()
) -> np.ndarray:
    """Refine one box (with its correction strokes) in a worker; returns the mask cropped to the box
    (``h x w bool``). The worker keeps what grabcut-fast learnt from the box, so corrections re-cut quickly
    when they reach the same worker (boxes go preferably to the worker holding their image)."""
    global _WORKER_REFINER
    if _WORKER_REFINER is None:
        _WORKER_REFINER = BoxRefiner(images_kept=IMAGES_PER_WORKER, results_kept=8)
    if rgb is not None:
        _WORKER_IMAGES[key] = rgb
        while len(_WORKER_IMAGES) > IMAGES_PER_WORKER:
            _WORKER_IMAGES.popitem(last=False)
    elif key not in _WORKER_IMAGES:
        raise _ImageUnknown(key)
    _WORKER_IMAGES.move_to_end(key)
    mask = _WORKER_REFINER.refine(_WORKER_IMAGES[key], box, settings, strokes)
    return mask[box.y0 : box.y1, box.x0 : box.x1]


def _warm() -> int:
    """Import what refining needs (run once per worker when the pool starts)."""
    import cv2  # noqa: F401
    import maxflow  # noqa: F401

    return os.getpid()


# ---- in the serving process --------------------------------------------------------------------------


class _Worker:
    def __init__(self, context):
        self.executor = ProcessPoolExecutor(max_workers=1, mp_context=context)
        self.pending = 0
        self.images: OrderedDict[str, None] = OrderedDict()  # what this worker holds, as far as we know


class WorkerPool:
    """A few single-process executors; each box goes to the least busy one, preferring one that already
    holds its image."""

    def __init__(self, workers: int):
        self.size = workers
        self._lock = threading.Lock()
        self._workers: list[_Worker] | None = None

    def _ensure(self) -> list[_Worker]:
        with self._lock:
            if self._workers is None:
                context = multiprocessing.get_context("spawn")
                self._workers = [_Worker(context) for _ in range(self.size)]
                for worker in self._workers:
                    worker.executor.submit(_warm)
            return self._workers

    def _pick(self, key: str) -> _Worker:
        workers = self._ensure()
        with self._lock:
            least = min(w.pending for w in workers)
            holders = [w for w in workers if key in w.images and w.pending <= least]
            worker = holders[0] if holders else min(workers, key=lambda w: w.pending)
            worker.pending += 1
            return worker

    def cut(
        self, prepared: _PreparedImage, box: Box, settings: RefineSettings, strokes: tuple[Stroke, ...] = ()
    ) -> np.ndarray:
        """The mask of one box (with its correction strokes), cropped to it (``h x w bool``), cut in a worker."""
        worker = self._pick(prepared.key)
        try:
            send = None if prepared.key in worker.images else prepared.rgb
            try:
                crop = worker.executor.submit(_worker_refine, prepared.key, send, box, settings, strokes).result()
            except _ImageUnknown:
                crop = worker.executor.submit(
                    _worker_refine, prepared.key, prepared.rgb, box, settings, strokes
                ).result()
            with self._lock:
                worker.images[prepared.key] = None
                worker.images.move_to_end(prepared.key)
                while len(worker.images) > IMAGES_PER_WORKER:
                    worker.images.popitem(last=False)
            return crop
        finally:
            with self._lock:
                worker.pending -= 1

    def reset(self) -> None:
        """Stop the workers (a broken pool is rebuilt on the next call)."""
        with self._lock:
            workers, self._workers = self._workers, None
        for worker in workers or []:
            worker.executor.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        with self._lock:
            workers = list(self._workers or [])
        return [pid for w in workers for pid in (w.executor._processes or {})]


_SHARED: dict[int, WorkerPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(workers: int) -> WorkerPool:
    """The process's pool of ``workers`` workers (one per size, made once, stopped at exit)."""
    with _SHARED_LOCK:
        if workers not in _SHARED:
            _SHARED[workers] = WorkerPool(workers)
        return _SHARED[workers]


@atexit.register
def _stop_pools() -> None:
    for pool in list(_SHARED.values()):
        pool.reset()


class PooledRefiner(BoxRefiner):
    """A :class:`BoxRefiner` whose classic methods cut in worker processes (see the module docstring).

    Args:
        workers: worker processes (``None``: :func:`default_workers`; 0: refine in this process).
    """

    def __init__(self, registry=None, images_kept: int = 4, results_kept: int = 64, workers: int | None = None):
        super().__init__(registry, images_kept, results_kept)
        count = default_workers() if workers is None else workers
        self.pool = shared_pool(count) if count > 0 else None

    def _run(
        self, prepared: _PreparedImage, box: Box, settings: RefineSettings, strokes: tuple[Stroke, ...] = ()
    ) -> np.ndarray:
        if self.pool is None or settings.resolved_method not in POOLED_METHODS:
            return super()._run(prepared, box, settings, strokes)
        try:
            crop = self.pool.cut(prepared, box, settings, strokes)
        except BrokenProcessPool:
            self.pool.reset()
            return super()._run(prepared, box, settings, strokes)
        height, width = prepared.rgb.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        mask[box.y0 : box.y1, box.x0 : box.x1] = crop
        return mask
