"""Batch export: throughput next to the I/O floor, the Ray runner next to the local one, memory over many jobs,
and the time a resume spends skipping finished jobs.

    python benchmarks/export.py [--composites 1000] [--size 512] [--workers 1,2] [--memory-jobs 10000]
                                [--memory-size 128] [--skip-ray] [--quick]

The source is a small synthetic VOC dataset: the bundled labelled samples (and their mirror images) resized to
``--size`` squared, so every composite is ``--size`` x ``--size``. The recipe: ``--composites`` composites
(Gaussian blending, the real samples excluded), split 80/20, written as VOC + COCO.

1. Throughput, per worker count: the export's samples per second (wall time of ``run_export``: planning,
   making, durable atomic writes, checksums, the ledger, then split lists, COCO and the manifest), next to
   - the I/O floor: the same images and label maps (decoded from the export, in memory before the clock starts)
     encoded with the same encoders (PIL JPEG quality 95, PIL palette PNG) and written with plain writes, in as
     many processes as the export's workers. Target: ratio >= 0.7.
   - generate + write: the same jobs made by the same ``make`` and written the same way as the floor, with none
     of the export's bookkeeping (no quality scores, boxes, checksums, ledger, COCO): what the machinery costs.
2. Ray: the same recipe with ``--runner ray`` and the largest worker count, on a local Ray with that many
   CPUs. Ray's one-time start (``ray.init``) and shutdown are timed apart from the export (which reuses the
   running Ray, its actors started inside it); the ratio is the Ray export's time over the local runner's.
   Target <= 1.3x. The two trees are compared (byte-identical expected).
3. Memory: an export of ``--memory-jobs`` composites at ``--memory-size`` (small by default, so that 10,000
   jobs take minutes) in a child process with the largest worker count; the resident memory of the child and
   its workers together is sampled every 0.1 s: the peak, and the memory when 10% and 100% of the jobs were
   done. Target: peak < 500 MB.
4. Resume, on the 1-worker export of part 1: (a) a resume of the finished export (every job skipped: planning,
   ledger, file checks, then split lists, COCO and the manifest written again), timed whole; (b) 10% of the
   jobs set back to ``pending`` in the ledger, the resume timed, less the time the export takes to make that
   many samples (part 1's rate): the cost of skipping the other 90%. Target < 5 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.errors import SampleProblem  # noqa: E402
from core.export.recipe import Recipe  # noqa: E402
from core.export.runner import run_export  # noqa: E402
from core.types import ClassSet  # noqa: E402

LEDGER = "segstudio-export.sqlite"


def make_dataset(folder: Path, size: int) -> list[str]:
    """The bundled labelled samples and their mirror images, resized to ``size`` x ``size``, as a VOC folder."""
    import cv2

    from core.io.images import save_image, save_label_map
    from core.store import DatasetStore

    source = DatasetStore(ROOT / "assets" / "samples")
    for sample_id in source.labelled_ids():
        image = cv2.resize(source.image(sample_id), (size, size), interpolation=cv2.INTER_AREA)
        label = cv2.resize(source.label_map(sample_id), (size, size), interpolation=cv2.INTER_NEAREST)
        for suffix, flip in (("", False), ("_mirror", True)):
            save_image(folder / "JPEGImages" / f"{sample_id}{suffix}.jpg", image[:, ::-1].copy() if flip else image)
            save_label_map(folder / "SegmentationClass" / f"{sample_id}{suffix}.png",
                           label[:, ::-1].copy() if flip else label, source.classes)  # fmt: skip
    return DatasetStore(folder).labelled_ids()


def recipe_of(source: Path, count: int) -> Recipe:
    return Recipe.from_dict({"source": str(source), "seed": 0, "real": "exclude",
                             "generate": [{"backend": "composite", "count": count, "options": {"blending": "gaussian"}}],
                             "split": {"train": 0.8, "val": 0.2}, "formats": ["voc", "coco"]})  # fmt: skip


def timed_export(recipe: Recipe, out: Path, **options) -> float:
    start = time.perf_counter()
    summary = run_export(recipe, out, **options)
    seconds = time.perf_counter() - start
    if len(summary.failures) > 0.02 * max(summary.total, 1):  # composites with no room for any object fail
        raise RuntimeError(f"{len(summary.failures)} jobs failed: {summary.failures[:3]}")
    if summary.failures:
        print(f"  ({len(summary.failures)} of {summary.total} composites found no room for an object and failed; "
              f"first: {summary.failures[0][1][:80]})")  # fmt: skip
    return seconds


def same_tree(a: Path, b: Path) -> bool:
    from tests.reliability.helpers import tree_digest

    def digest(root: Path) -> dict:
        return {k: v for k, v in tree_digest(root).items() if LEDGER not in k}

    return digest(a) == digest(b)


# ---- anchors: the I/O floor and generate + write, in worker processes timed together -------------------------


def _encode_write(folder: Path, name: str, image: np.ndarray, label: np.ndarray, palette: list[int]) -> None:
    from PIL import Image

    Image.fromarray(image).save(folder / f"{name}.jpg", format="JPEG", quality=95)
    indexed = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    indexed.putpalette(palette)
    indexed.save(folder / f"{name}.png", format="PNG", optimize=False)


def _floor_worker(export: str, names: list[str], dest: str, barrier, results) -> None:
    from PIL import Image

    palette = ClassSet.load(Path(export) / "classes.json").palette().reshape(-1).tolist()
    loaded = []
    for name in names:  # decoded before the clock starts: the floor is encoding and writing only
        image = np.asarray(Image.open(Path(export) / "JPEGImages" / f"{name}.jpg").convert("RGB"))
        label = np.asarray(Image.open(Path(export) / "SegmentationClass" / f"{name}.png"))
        loaded.append((name, image, label))
    barrier.wait()
    start = time.perf_counter()
    for name, image, label in loaded:
        _encode_write(Path(dest), name, image, label, palette)
    results.put(time.perf_counter() - start)


def _generate_worker(recipe_doc: dict, jobs: list[dict], dest: str, barrier, results) -> None:
    from core.export.make import MakeContext, make
    from core.export.plan import Job

    context = MakeContext(Recipe.from_dict(recipe_doc))
    palette = context.store.classes.palette().reshape(-1).tolist()
    context.library(64)  # the region library is built once per process, by the export too: not timed
    barrier.wait()
    start = time.perf_counter()
    for doc in jobs:
        job = Job(**{**doc, "seeds": tuple(doc["seeds"])})
        try:
            made = make(job, context)
        except SampleProblem:  # no room for any object: the export records it as failed too
            continue
        _encode_write(Path(dest), job.output_id, made.image, made.label_map, palette)
    results.put(time.perf_counter() - start)


def _in_processes(target, shares: list[tuple], dest: Path) -> float:
    """Run ``target(*share, dest, barrier, results)`` in one spawned process per share, all released together
    once ready; returns the slowest one's timed seconds."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(shares)), context.Queue()
    dest.mkdir(parents=True, exist_ok=True)
    processes = [context.Process(target=target, args=(*share, str(dest), barrier, results)) for share in shares]
    for process in processes:
        process.start()
    seconds = [results.get() for _ in processes]
    for process in processes:
        process.join()
    shutil.rmtree(dest)
    return max(seconds)


def io_floor(export: Path, workers: int, scratch: Path) -> float:
    names = sorted(p.stem for p in (export / "JPEGImages").iterdir())
    return len(names) / _in_processes(_floor_worker, [(str(export), names[i::workers]) for i in range(workers)],
                                      scratch / "floor")  # fmt: skip


def generate_and_write(recipe: Recipe, workers: int, scratch: Path) -> float:
    from core.export.plan import plan_jobs
    from core.export.runner import _recipe_doc
    from core.store import DatasetStore

    jobs = [j.to_json() for j in plan_jobs(recipe, DatasetStore(recipe.source))]
    doc = _recipe_doc(recipe)
    return len(jobs) / _in_processes(_generate_worker, [(doc, jobs[i::workers]) for i in range(workers)],
                                     scratch / "bare")  # fmt: skip


# ---- memory: a child process exporting, sampled from here ----------------------------------------------------

MEMORY_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from core.export.recipe import Recipe
from core.export.runner import run_export
last = [-1]
def progress(fraction, message=""):
    if fraction is not None and int(fraction * 100) != last[0]:
        last[0] = int(fraction * 100)
        print("P", fraction, flush=True)
start = time.perf_counter()
run_export(Recipe.from_dict({recipe!r}), {out!r}, workers={workers}, progress=progress)
print("T", time.perf_counter() - start, flush=True)
"""


def tree_rss_mb(process) -> float:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def memory_run(source: Path, jobs: int, workers: int, out: Path) -> dict:
    import psutil

    recipe = recipe_of(source, jobs).to_json() | {"quality": {}, "review": False}
    code = MEMORY_CHILD.format(root=str(ROOT), recipe=recipe, out=str(out), workers=workers)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    samples: list[float] = []
    at: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(tree_rss_mb(process))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = None
    for line in child.stdout:
        kind, value = line.split()
        if kind == "P":
            at[round(float(value) * 100)] = tree_rss_mb(process)
        elif kind == "T":
            seconds = float(value)
    child.wait()
    stop.set()
    sampler.join()
    if child.returncode or seconds is None:
        raise RuntimeError(f"the memory run failed (exit {child.returncode})")
    ten = min((p for p in at if p >= 10), default=max(at))
    return {"peak": max(samples + list(at.values())), "at10": at[ten], "at100": at[max(at)], "seconds": seconds,
            "jobs_per_s": jobs / seconds}  # fmt: skip


# ---- resume ------------------------------------------------------------------------------------------------


def resume_times(recipe: Recipe, out: Path, rate: float) -> dict:
    marks: dict[str, float] = {}

    def mark(fraction, message=""):
        marks.setdefault(message, time.perf_counter())

    start = time.perf_counter()
    timed_export(recipe, out, resume=True, progress=mark)
    skip_all, skip_phase = time.perf_counter() - start, marks["writing splits and indexes"] - start
    total = recipe.generate[0].count
    reset = max(1, total // 10)
    with sqlite3.connect(out / LEDGER) as conn:
        conn.execute("UPDATE jobs SET state = 'pending' WHERE id IN (SELECT id FROM jobs ORDER BY position LIMIT ? "
                     "OFFSET ?)", (reset, (total - reset) // 2))  # fmt: skip
    partial = timed_export(recipe, out, resume=True)
    return {"skip_all": skip_all, "skip_phase": skip_phase, "indexes": skip_all - skip_phase, "partial": partial,
            "reset": reset, "skipped": total - reset, "skip_part": partial - reset / rate}  # fmt: skip


def ray_times(recipe: Recipe, out: Path, workers: int) -> dict:
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)  # fmt: skip
    init = time.perf_counter() - start
    try:
        export = timed_export(recipe, out, runner="ray", workers=workers)
    finally:
        start = time.perf_counter()
        ray.shutdown()
        shutdown = time.perf_counter() - start
    return {"init": init, "export": export, "shutdown": shutdown}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--composites", type=int, default=1000, help="composites of parts 1, 2 and 4")
    parser.add_argument("--size", type=int, default=512, help="side of the dataset's (and the composites') images")
    parser.add_argument("--workers", default="1,2", help="worker counts of part 1 (the largest is used by 2 and 3)")
    parser.add_argument("--memory-jobs", type=int, default=10_000)
    parser.add_argument("--memory-size", type=int, default=128, help="image side of the memory run")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 24 composites at 128, 200 memory jobs")
    args = parser.parse_args()
    if args.quick:
        args.composites, args.size, args.memory_jobs, args.memory_size = 24, 128, 200, 64
    counts = sorted({int(w) for w in args.workers.split(",")})
    most = counts[-1]
    ok = True
    print(f"export benchmark: {os.cpu_count()} CPUs; {args.composites} composites at {args.size}x{args.size} to "
          f"VOC + COCO; workers {counts}; load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="segstudio-export-bench-") as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "data", args.size)
        recipe = recipe_of(tmp / "data", args.composites)

        # 1. throughput against the I/O floor and against generate + write
        seconds = {}
        for workers in counts:
            seconds[workers] = timed_export(recipe, tmp / f"out{workers}", workers=workers)
            ours = args.composites / seconds[workers]
            floor = io_floor(tmp / f"out{workers}", workers, tmp)
            bare = generate_and_write(recipe, workers, tmp)
            ok &= ours >= 0.7 * floor
            print(f"export {args.composites} composites {args.size}x{args.size}, {workers} worker(s): {ours:.1f} "
                  f"samples/s | I/O floor {floor:.1f} samples/s | ratio {ours / floor:.2f} (target >= 0.7: "
                  f"{verdict(ours >= 0.7 * floor)}) | generate + write {bare:.1f} samples/s | ratio "
                  f"{ours / bare:.2f}", flush=True)  # fmt: skip
        if len(counts) > 1:
            identical = same_tree(tmp / f"out{counts[0]}", tmp / f"out{most}")
            print(f"  trees of {counts[0]} and {most} workers identical: {identical}")

        # 2. Ray against the local runner
        if not args.skip_ray:
            ray = ray_times(recipe, tmp / "ray", most)
            ratio = ray["export"] / seconds[most]
            ok &= ratio <= 1.3
            per_job = (ray["export"] - seconds[most]) / args.composites * 1000
            print(f"ray runner, {most} workers: export {ray['export']:.1f} s | local runner {seconds[most]:.1f} s | ratio "
                  f"{ratio:.2f} (target <= 1.3: {verdict(ratio <= 1.3)}); {per_job:+.1f} ms a job; one-time start "
                  f"{ray['init']:.1f} s + shutdown {ray['shutdown']:.1f} s apart (with them: ratio "
                  f"{(ray['export'] + ray['init'] + ray['shutdown']) / seconds[most]:.2f}); same tree as local: "
                  f"{same_tree(tmp / 'ray', tmp / f'out{most}')}", flush=True)  # fmt: skip

        # 3. memory over many jobs (small images: see --memory-size)
        make_dataset(tmp / "small", args.memory_size)
        memory = memory_run(tmp / "small", args.memory_jobs, most, tmp / "memory")
        ok &= memory["peak"] < 500
        print(f"memory, {args.memory_jobs} composites {args.memory_size}x{args.memory_size}, {most} workers "
              f"({memory['jobs_per_s']:.0f} jobs/s): peak {memory['peak']:.0f} MB (driver + workers) | at 10% "
              f"{memory['at10']:.0f} MB, at 100% {memory['at100']:.0f} MB | ratio 100%/10% "
              f"{memory['at100'] / memory['at10']:.2f} (target peak < 500 MB: {verdict(memory['peak'] < 500)})",
              flush=True)  # fmt: skip
        shutil.rmtree(tmp / "memory")

        # 4. resume on part 1's first export
        resume = resume_times(recipe, tmp / f"out{counts[0]}", args.composites / seconds[counts[0]])
        ok &= resume["skip_part"] < 5
        print(f"resume of {args.composites} finished jobs: {resume['skip_all']:.2f} s = skipping them (plan, ledger, "
              f"file checks) {resume['skip_phase']:.2f} s + split lists, COCO, manifest rewritten {resume['indexes']:.2f} s | "
              f"{resume['reset']} set back to pending: {resume['partial']:.2f} s, less making them at part 1's rate = "
              f"{resume['skip_part']:.2f} s to skip {resume['skipped']} and rewrite the indexes | ratio to target "
              f"{resume['skip_part'] / 5:.2f} (target < 5 s: {verdict(resume['skip_part'] < 5)})", flush=True)  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other work on this machine skews the timings)")
    print(json.dumps({"all_targets_met": bool(ok)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
