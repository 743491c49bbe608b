"""Does synthetic data help? The augmentation-value experiment on grabcut50 (issue 14).

    python benchmarks/augment_value.py [--data ../shared/data/grabcut50] [--out DIR] [--steps 300] [--repeats 5]
                                       [--sources composite,recombined,mined[,adversarial]] [--ratios 0.5,1,2]
                                       [--standard-aug flip] [--size 128] [--width 16] [--device cpu|cuda]
                                       [--budget SECONDS] [--quick]

1. The real data (foreground / background, 50 images) is split 30 / 10 / 10 by ``--seed`` (core.task.data.split_ids,
   the split the experiment itself fixes).
2. The synthetic sources are made by the experiment itself (``ExperimentConfig.make_sources``, core/task/sources.py)
   from a copy of the 30 train samples alone (``OUT/experiment/synthetic/train_view``), so no val or test image
   leaks into synthetic data:
   - ``composite``: ``segstudio generate TRAIN_VIEW --backend composite`` (random cut-and-paste);
   - ``recombined``: ``segstudio recombine TRAIN_VIEW --mode overlay`` (a foreground region of one map overlaid,
     with its pixels, on another);
   - ``mined`` (``hard`` is accepted as its older name): task-aware hard composites, the hardest of K random ones
     for a small task model trained on the train view; ``adversarial``: the learned synthesizer (not in the default
     list, it costs a synthesizer training).
   ``N = round(max ratio x 30)`` (60), so the largest ratio uses each synthetic sample once. Each source is timed.
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
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.errors import Cancelled, StudioError  # noqa: E402
from core.progress import CancelToken, no_progress  # noqa: E402
from core.task.data import split_ids  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "grabcut50"
SOURCES = ("composite", "recombined", "mined", "adversarial")
DEFAULT_SOURCES = "composite,recombined,mined"


def source_kinds(text: str) -> tuple[str, ...]:
    """``--sources`` as the experiment's ``make_sources`` (``hard`` is the older name of ``mined``)."""
    from core.task.experiment import parse_names

    kinds = tuple("mined" if k == "hard" else k for k in parse_names(text))
    unknown = [k for k in kinds if k not in SOURCES]
    if unknown:
        raise SystemExit(f"unknown source {unknown[0]!r}; accepted: {', '.join(SOURCES)}")
    return kinds


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
    from core.task.experiment import (
        SOURCES_DIR,
        ExperimentConfig,
        count_runs,
        make_experiment_sources,
        parse_names,
        parse_numbers,
        run_experiment,
    )
    from core.task.sources import TRAIN_VIEW

    began = time.perf_counter()
    store = open_store(args.data)
    ids = store.labelled_ids()
    split = split_ids(ids, args.split, args.seed)
    ratios = parse_numbers(args.ratios, "--ratios")
    count = max(1, round(max(ratios) * len(split.train)))
    print(f"data {args.data}: {len(ids)} labelled samples, split {len(split.train)} / {len(split.val)} / "
          f"{len(split.test)} by seed {args.seed}; output {out}", flush=True)  # fmt: skip

    # 2. synthetic folders from the train split alone (the experiment makes them; made here first to time each)
    config = ExperimentConfig(data=str(args.data), make_sources=source_kinds(args.sources), ratios=(0.0, *ratios),
                              standard_aug=parse_names(args.standard_aug), repeats=args.repeats, steps=args.steps,
                              size=args.size, split=args.split, seed=args.seed, batch=args.batch, lr=args.lr,
                              width=args.width, depth=args.depth,
                              val_every=args.steps if args.quick else max(1, args.steps // 10),
                              device=args.device)  # fmt: skip
    t0 = time.perf_counter()
    timings = {}
    for kind in config.make_sources:
        t = time.perf_counter()
        one = replace(config, make_sources=(kind,))
        make_experiment_sources(one, out / "experiment", store, split.to_json(), no_progress, None)
        timings[kind] = time.perf_counter() - t
        view_ids = {p.stem for p in (out / "experiment" / SOURCES_DIR / TRAIN_VIEW / "JPEGImages").iterdir()}
        assert view_ids == set(split.train), "the sources' train view holds other samples than the train split"
        print(f"source {kind}: {count} samples from the {len(split.train)} train images in {timings[kind]:.1f} s",
              flush=True)  # fmt: skip
    generation = time.perf_counter() - t0

    # 3. the experiment
    n_runs = count_runs(config)  # the sources it makes included
    print(f"experiment: {n_runs} runs ({n_runs // args.repeats} rows x {args.repeats} repeats), {args.steps} steps "
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
        n_full = n_runs // args.repeats * full["repeats"]
        estimate = n_full * (full["steps"] * per_step + overhead) + generation
        print(f"estimated full run ({n_full} runs x {full['steps']} steps, {full['repeats']} repeats, the sources "
              f"above): {estimate / 3600:.1f} h at that rate")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
