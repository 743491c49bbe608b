"""Does synthetic data help? The augmentation-value experiment on grabcut50 (issue 14).

    python benchmarks/augment_value.py [--data ../shared/data/grabcut50] [--out DIR] [--steps 300] [--repeats 5]
                                       [--sources composite,recombined,hard[,adversarial]] [--ratios 0.5,1,2]
                                       [--standard-aug flip] [--size 128] [--width 16] [--quick]

1. The real data (foreground / background, 50 images) is split 30 / 10 / 10 by ``--seed`` (core.task.data.split_ids,
   the split the experiment itself fixes).
2. A train-only copy of the data (the 30 train samples, VOC layout, in ``OUT/train_view``) is made, and the synthetic
   folders are generated *from it alone* with the project's own command line, so no val or test image leaks into
   synthetic data:
   - ``composite``: ``segstudio generate TRAIN_VIEW --backend composite --count N --seed S``
     (foreground objects cut from train images pasted onto other train images);
   - ``recombined``: ``segstudio recombine TRAIN_VIEW --mode overlay --class foreground --target <every train id>``
     (label-map recombination: a foreground region of one map overlaid, with its pixels, on another);
   - ``hard``: task-aware hard composites, mined (core/task/hard.py: ``K`` random composites per kept one, the one
     a small task model trained on the train view gets most wrong), and ``adversarial`` (its learned synthesizer;
     not in the default list, it costs a synthesizer training). There is no ``segstudio generate --mode hard``
     yet, so these use the module's own writer ``write_hard_composites`` on the train view; skipped with the reason
     printed when the module is absent or fails.
   ``N = round(max ratio x 30)`` (60), so the largest ratio uses each synthetic sample once.
3. ``segstudio experiment`` (core.task.experiment.run_experiment) at 128 x 128 on the CPU: real only vs real + each
   source at each ratio, plus each source alone, ``--repeats`` trainings each (seeds seed..seed+K-1), best
   checkpoint on val, test mIoU on the 10 test images at full resolution.

Prints the table (``OUT/table.md``), the wall time of each part and the measured seconds per training step, with the
estimated wall time of the full run. Rerunning with the same ``--out`` continues where it stopped (finished runs are
kept). ``--quick`` is a smoke run: 1 repeat, 4 steps, all sources and ratios (its mIoU figures mean nothing).
Skips (exit 0) with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.errors import Cancelled, StudioError  # noqa: E402
from core.progress import CancelToken  # noqa: E402
from core.task.data import split_ids  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "grabcut50"
SOURCES = ("composite", "recombined", "hard", "adversarial")
DEFAULT_SOURCES = "composite,recombined,hard"


def cli(*args: str) -> subprocess.CompletedProcess:
    """``segstudio ARGS`` in a subprocess (the project's own command line, as a user would run it)."""
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, capture_output=True, text=True)


def write_train_view(store, ids: list[str], folder: Path) -> None:
    """The train samples of ``store`` as a VOC-layout folder (same ids, full resolution, lossless PNG)."""
    from core.io.images import save_image, save_label_map

    marker = folder / "ids.json"
    if marker.is_file() and json.loads(marker.read_text()) == ids:
        return
    for sample in store.each(ids):
        save_image(folder / "JPEGImages" / f"{sample.id}.png", sample.image)
        save_label_map(folder / "SegmentationClass" / f"{sample.id}.png", sample.label_map, store.classes)
    (folder / "classes.json").write_text(json.dumps(store.classes.to_json(), indent=2) + "\n")
    marker.write_text(json.dumps(ids))


def make_source(name: str, view: Path, train_ids: list[str], classes: list[str], out: Path, count: int,
                seed: int, quick: bool = False) -> str | None:  # fmt: skip
    """Generate synthetic source ``name`` from the train view into ``out``; returns ``None`` or why it was skipped."""
    if (out / "manifest.jsonl").is_file() and (out / "done.json").is_file():
        if json.loads((out / "done.json").read_text()) == {"count": count, "seed": seed, "ids": train_ids}:
            return None
    common = ["--count", str(count), "--seed", str(seed), "--out", str(out)]
    if name == "composite":
        done = cli("generate", str(view), "--backend", "composite", *common)
    elif name == "recombined":
        targets = [a for i in train_ids for a in ("--target", i)]
        wanted = [a for c in classes[1:] for a in ("--class", c)]
        done = cli("recombine", str(view), "--mode", "overlay", *wanted, *targets, *common)
    elif name in ("hard", "adversarial"):
        if importlib.util.find_spec("core.task.hard") is None:
            return "core/task/hard.py is absent (task-aware hard compositing is not built yet)"
        import core.task.hard as hard

        if not hasattr(hard, "write_hard_composites"):
            return "core.task.hard has no write_hard_composites (its writer) yet"
        # No `segstudio generate --mode hard` yet: the module's own writer, on the train view alone (its task model
        # is trained there too), so no val / test sample is seen.
        mode = "mined" if name == "hard" else "adversarial"
        try:
            task_config = hard.default_task_config(view, steps=20 if quick else 300, seed=seed)
            settings = hard.HardSettings(mode=mode, steps=5) if quick and mode == "adversarial" else None
            if out.is_dir() and not (out / "done.json").is_file():
                shutil.rmtree(out / "JPEGImages", ignore_errors=True)  # a cut write: its task run is resumed
                (out / "manifest.jsonl").unlink(missing_ok=True)
            hard.write_hard_composites(view, out, count, seed, mode=mode, task_config=task_config, settings=settings)
        except (StudioError, TypeError, AttributeError, ImportError) as exc:
            return f"core.task.hard.write_hard_composites failed: {type(exc).__name__}: {exc}"
        (out / "done.json").write_text(json.dumps({"count": count, "seed": seed, "ids": train_ids}))
        return None
    else:
        return f"unknown source {name!r}; accepted: {', '.join(SOURCES)}"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return f"generation failed (exit {done.returncode}): {tail}"
    (out / "done.json").write_text(json.dumps({"count": count, "seed": seed, "ids": train_ids}))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="experiment folder (default: a folder in the temp dir)")
    parser.add_argument("--sources", default=DEFAULT_SOURCES,
                        help=f"synthetic sources, of {', '.join(SOURCES)} (default {DEFAULT_SOURCES})")
    parser.add_argument("--ratios", default="0.5,1,2")
    parser.add_argument("--standard-aug", default="flip", help="standard augmentations, comma-separated (default flip)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16, help="U-Net base channels (default 16: CPU-sized)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--split", default="30,10,10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default: the issue's CPU figures), auto, cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 4 steps")
    parser.add_argument("--budget", type=float, default=0,
                        help="seconds for the experiment part: then the run in progress checkpoints, the table of the "
                             "finished runs is written and printed (a rerun with the same --out continues)")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the grabcut50 evaluation set lives in ../shared/data; see its README)")
        return 0
    full = {"repeats": args.repeats, "steps": args.steps}
    if args.quick:
        args.repeats, args.steps = 1, 4
    out = args.out or Path(tempfile.gettempdir()) / ("segstudio_augment_value" + ("_quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from core.task.data import open_store
    from core.task.experiment import ExperimentConfig, parse_names, parse_numbers, plan_rows, run_experiment

    began = time.perf_counter()
    store = open_store(args.data)
    ids = store.labelled_ids()
    split = split_ids(ids, args.split, args.seed)
    ratios = parse_numbers(args.ratios, "--ratios")
    count = max(1, round(max(ratios) * len(split.train)))
    print(f"data {args.data}: {len(ids)} labelled samples, split {len(split.train)} / {len(split.val)} / "
          f"{len(split.test)} by seed {args.seed}; output {out}", flush=True)  # fmt: skip

    # 2. synthetic folders from the train split alone
    t0 = time.perf_counter()
    view = out / "train_view"
    write_train_view(store, split.train, view)
    assert not set(split.val + split.test) & {p.stem for p in (view / "JPEGImages").iterdir()}
    sources, timings = [], {}
    for name in parse_names(args.sources):
        t = time.perf_counter()
        why = make_source(name, view, split.train, list(store.classes.names), out / "synthetic" / name, count,
                          args.seed, args.quick)  # fmt: skip
        timings[name] = time.perf_counter() - t
        if why:
            print(f"source {name}: skipped: {why}", flush=True)
        else:
            sources.append((name, str(out / "synthetic" / name)))
            print(f"source {name}: {count} samples from the {len(split.train)} train images in {timings[name]:.1f} s",
                  flush=True)  # fmt: skip
    generation = time.perf_counter() - t0

    # 3. the experiment
    config = ExperimentConfig(data=str(args.data), synthetic=tuple(sources), ratios=(0.0, *ratios),
                              standard_aug=parse_names(args.standard_aug), repeats=args.repeats, steps=args.steps,
                              size=args.size, split=args.split, seed=args.seed, batch=args.batch, lr=args.lr,
                              width=args.width, depth=args.depth,
                              val_every=args.steps if args.quick else max(1, args.steps // 10),
                              device=args.device)  # fmt: skip
    rows = plan_rows(config)
    print(f"experiment: {len(rows)} runs ({len(rows) // args.repeats} rows x {args.repeats} repeats), {args.steps} steps "
          f"each, {args.size} x {args.size}, U-Net width {args.width} depth {args.depth}, batch {args.batch}",
          flush=True)  # fmt: skip
    last = [0.0]

    def report(fraction, message=""):
        now = time.perf_counter()
        if now - last[0] > 30 or (fraction or 0) >= 1:
            last[0] = now
            print(f"  [{(fraction or 0) * 100:5.1f} %] {message}", flush=True)

    t1 = time.perf_counter()
    cancel = CancelToken()
    timer = threading.Timer(args.budget, cancel.cancel)
    timer.daemon = True
    if args.budget > 0:
        timer.start()
    try:
        result = run_experiment(config, out / "experiment", report, cancel)
    except Cancelled as exc:
        table = out / "experiment" / "table.md"
        print(f"\nstopped after the --budget of {args.budget:.0f} s: {exc}")
        print(table.read_text(encoding="utf-8") if table.is_file() else "(no run had finished)")
        return 0
    except StudioError as exc:
        print(f"error: {exc}")
        return 2
    finally:
        timer.cancel()
    experiment = time.perf_counter() - t1
    stored = json.loads((out / "experiment" / "split.json").read_text())
    assert stored["train"] == split.train and stored["test"] == split.test, "the experiment's split differs"

    print()
    print(result.table.read_text(encoding="utf-8"))
    trained = [r for r in result.runs if r["row"] in set(result.trained)]
    steps_done = sum(r["steps"] - r["resumed_from"] for r in trained)
    train_s = sum(r["train_seconds"] for r in trained)
    per_step = train_s / steps_done if steps_done else float("nan")
    overhead = (sum(r["wall_seconds"] for r in trained) - train_s) / len(trained) if trained else float("nan")
    total = time.perf_counter() - began
    print(f"wall time: {total:.0f} s in all: train view + generation {generation:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}), experiment {experiment:.0f} s "
          f"({len(result.trained)} runs trained, {len(result.skipped)} already finished)")  # fmt: skip
    if trained:
        print(f"measured: {per_step:.2f} s per training step ({args.size} x {args.size}, batch {args.batch}, width "
              f"{args.width}, device {args.device}, including validation and checkpoints), {overhead:.1f} s per run "
              "for data, views and test evaluation")  # fmt: skip
        n_full = len(rows) // args.repeats * full["repeats"]
        estimate = n_full * (full["steps"] * per_step + overhead) + generation
        print(f"estimated full run ({n_full} runs x {full['steps']} steps, {full['repeats']} repeats, the sources "
              f"above): {estimate / 3600:.1f} h at that rate")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
