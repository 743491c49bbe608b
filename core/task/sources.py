"""Synthetic sources the augmentation-value experiment makes itself, from the train split alone.

A synthetic folder made from the whole dataset would carry val and test images (pasted objects, backgrounds,
recombined regions) into training and inflate every gain. The experiment fixes its split first, writes the train
samples alone as a VOC-layout folder (``train_view``), and makes each source from that folder only:

- ``composite``: ``segstudio generate VIEW --backend composite`` (random cut-and-paste; objects and backgrounds
  of the train images);
- ``recombined``: ``segstudio recombine VIEW --mode overlay`` with every non-background class, onto every train
  label map in turn (label-map recombination: one map's region pasted with its pixels onto another);
- ``mined``: :func:`core.task.hard.write_hard_composites` in ``mined`` mode (the hardest of K random composites
  for a small task model trained on the train view);
- ``adversarial``: the same writer's learned synthesizer (costs a synthesizer training).

``composite`` and ``recombined`` run the project's own command line in a child process (what a user would run),
stopped at once on cancel; ``mined`` and ``adversarial`` run in this process with the cancel token. A finished source
leaves ``done.json`` (count, seed, train ids); a rerun with the same values keeps it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core.errors import Cancelled, InvalidInput, StudioError
from core.io.atomic import atomic_write_text
from core.progress import CancelToken, ProgressFn, no_progress

MADE_SOURCES = ("composite", "recombined", "mined", "adversarial")
TRAIN_VIEW = "train_view"
DONE_FILE = "done.json"
POLL_S = 0.2


def write_train_view(store, ids: list[str], folder: Path) -> Path:
    """The samples ``ids`` of ``store`` as a VOC-layout folder (same ids, full resolution, lossless PNG,
    ``classes.json``); kept as is when ``ids.json`` there already lists ``ids``. Returns ``folder``."""
    from core.io.images import save_image, save_label_map

    folder = Path(folder)
    marker = folder / "ids.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == list(ids):
        return folder
    for sample in store.each(ids):
        save_image(folder / "JPEGImages" / f"{sample.id}.png", sample.image)
        save_label_map(folder / "SegmentationClass" / f"{sample.id}.png", sample.label_map, store.classes)
    atomic_write_text(folder / "classes.json", json.dumps(store.classes.to_json(), indent=2) + "\n")
    atomic_write_text(marker, json.dumps(list(ids)))
    return folder


def _run_cli(args: list[str], cancel: CancelToken | None) -> None:
    """``segstudio ARGS`` in a child process; killed on cancel. Raises :class:`InvalidInput` with its last error
    line when it fails, :class:`Cancelled` when cancelled."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    while proc.poll() is None:
        if cancel is not None and cancel.cancelled:
            proc.kill()
            proc.wait()
            raise Cancelled(f"`segstudio {args[0]}` was cancelled")
        time.sleep(POLL_S)
    _, err = proc.communicate()
    if proc.returncode != 0:
        tail = (err.strip().splitlines() or ["(no message)"])[-1]
        raise InvalidInput(f"`segstudio {' '.join(args[:3])} ...` failed (exit {proc.returncode}): {tail}")


def make_source(kind: str, view: Path, out: Path, count: int, seed: int, *, classes: list[str],
                progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Path:  # fmt: skip
    """Make ``count`` samples of source ``kind`` (one of :data:`MADE_SOURCES`) from the train view ``view`` into
    ``out`` (a VOC-layout folder with ``manifest.jsonl``); returns ``out``.

    Args:
        classes: the dataset's class names (index order); ``recombined`` overlays every class but the first.

    Raises:
        InvalidInput: ``kind`` is unknown, or making it failed (the reason named).
        Cancelled: ``cancel`` was set (a rerun starts this source again).
    """
    if kind not in MADE_SOURCES:
        raise InvalidInput(f"synthetic source kind {kind!r} is unknown; the experiment makes: {', '.join(MADE_SOURCES)}")
    view, out = Path(view), Path(out)
    ids = sorted(p.stem for p in (view / "JPEGImages").iterdir())
    wanted = {"kind": kind, "count": int(count), "seed": int(seed), "ids": ids}
    done = out / DONE_FILE
    if done.is_file() and json.loads(done.read_text(encoding="utf-8")) == wanted:
        return out
    if out.exists():
        shutil.rmtree(out / "JPEGImages", ignore_errors=True)  # a cut write; a task run inside is resumed
        shutil.rmtree(out / "SegmentationClass", ignore_errors=True)
        (out / "manifest.jsonl").unlink(missing_ok=True)
    report = progress or no_progress
    report(0.0, f"making {count} {kind} samples from the {len(ids)} train images")
    common = ["--count", str(count), "--seed", str(seed), "--out", str(out)]
    if kind == "composite":
        _run_cli(["generate", str(view), "--backend", "composite", *common], cancel)
    elif kind == "recombined":
        wanted_classes = [a for c in classes[1:] for a in ("--class", c)]
        targets = [a for i in ids for a in ("--target", i)]
        _run_cli(["recombine", str(view), "--mode", "overlay", *wanted_classes, *targets, *common], cancel)
    else:
        from core.task.hard import default_task_config, write_hard_composites

        task_config = default_task_config(view, seed=seed)
        try:
            write_hard_composites(view, out, count, seed, mode="mined" if kind == "mined" else "adversarial",
                                  task_config=task_config, progress=progress, cancel=cancel)  # fmt: skip
        except Cancelled:
            raise
        except StudioError as exc:
            raise InvalidInput(f"making {kind} composites failed: {exc}") from exc
    atomic_write_text(done, json.dumps(wanted))
    report(1.0, f"{kind}: {count} samples in {out}")
    return out
