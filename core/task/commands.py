"""The ``train-segmenter``, ``evaluate-segmenter`` and ``experiment`` commands.

``add_parsers(sub)`` adds them to an argparse subparsers object; each sets ``handler`` to a function taking the
parsed arguments and returning an exit code. Handlers raise :class:`core.errors.StudioError` for errors a user
can cause; ``core.cli.run`` prints those as one line and returns status 2.

::

    segstudio train-segmenter --data DIR [--synthetic DIR ...] [--ratio R] [--size 128] [--steps N] --out RUN [--resume]
    segstudio evaluate-segmenter RUN --data DIR [--split test] [--which best] [--json]
    segstudio experiment --data DIR [--synthetic NAME=DIR ...] [--make composite,recombined,mined] --ratios 0,0.5,1,2 [--standard-aug none,flip]
                         --repeats K --steps N [--size 128] [--split 30,10,10] --out EXP
"""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import InvalidInput

TRAIN_OPTIONS = {  # argparse dest -> SegmenterConfig field, for the options whose default is the config's
    "size": "size", "steps": "steps", "batch": "batch", "lr": "lr", "seed": "seed", "width": "width",
    "depth": "depth", "norm": "norm", "arch": "arch", "aug": "standard_aug", "split": "split",
    "val_every": "val_every", "checkpoint_every": "checkpoint_every", "device": "device", "ratio": "ratio",
    "overflow": "overflow",
}  # fmt: skip


def add_parsers(sub) -> None:
    """Add ``train-segmenter``, ``evaluate-segmenter`` and ``experiment`` to ``sub`` (from
    ``ArgumentParser.add_subparsers``)."""
    from core.task.data import AUGMENTATIONS, OVERFLOW
    from core.task.model import ARCHS, NORMS

    tr = sub.add_parser("train-segmenter", help="train a semantic segmenter on a dataset (plus synthetic folders), "
                                                "resumable; keeps the best checkpoint by validation mIoU")  # fmt: skip
    tr.add_argument("--data", required=True, metavar="DIR", help="real dataset folder with label maps")
    tr.add_argument("--synthetic", action="append", default=[], metavar="DIR",
                    help="synthetic dataset folder added to the train set (repeat for several)")  # fmt: skip
    tr.add_argument("--ratio", type=float, default=None, metavar="R",
                    help="synthetic samples per real training sample (default 1, needs --synthetic)")  # fmt: skip
    tr.add_argument("--overflow", choices=list(OVERFLOW), default=None,
                    help="when R asks for more synthetic samples than there are: repeat them (default) or cap")  # fmt: skip
    tr.add_argument("--split", default=None, metavar="TR,VA,TE",
                    help="train,val,test split of the real samples: counts (30,10,10) or fractions "
                         "(default 0.6,0.2,0.2)")  # fmt: skip
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder (config, split, log, checkpoints)")
    tr.add_argument("--size", type=int, default=None, help="square training side (default 128)")
    tr.add_argument("--steps", type=int, default=None, metavar="N", help="optimizer steps in all (default 1000)")
    tr.add_argument("--batch", type=int, default=None, metavar="B", help="samples per step (default 8)")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3, AdamW)")
    tr.add_argument("--seed", type=int, default=None, help="seed of split, draw, init, batches, augmentation (default 0)")
    tr.add_argument("--arch", choices=list(ARCHS), default=None, help="network (default unet)")
    tr.add_argument("--width", type=int, default=None, help="U-Net base channels (default 32)")
    tr.add_argument("--depth", type=int, default=None, help="U-Net downsamplings (default 4)")
    tr.add_argument("--norm", choices=list(NORMS), default=None, help="U-Net normalisation (default group)")
    tr.add_argument("--pretrained", action="store_true",
                    help="torchvision archs: ImageNet backbone weights from a local file (never downloaded)")  # fmt: skip
    tr.add_argument("--aug", choices=list(AUGMENTATIONS), default=None, help="standard augmentation (default flip+scale)")
    tr.add_argument("--val-every", type=int, default=None, metavar="K", help="validate every K steps (default 100)")
    tr.add_argument("--checkpoint-every", type=int, default=None, metavar="K", help="checkpoint every K steps")
    tr.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    tr.add_argument("--no-amp", action="store_true", help="train in fp32 on CUDA too")
    tr.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
    tr.set_defaults(handler=run_train_segmenter)

    ev = sub.add_parser("evaluate-segmenter", help="per-class IoU, mIoU and pixel accuracy of a segmenter run")
    ev.add_argument("run", metavar="RUN", help="the run folder (segstudio train-segmenter --out RUN)")
    ev.add_argument("--data", required=True, metavar="DIR", help="dataset folder with label maps")
    ev.add_argument("--split", choices=["train", "val", "test", "all"], default="test",
                    help="which of the run's split to evaluate (default test; all: every labelled sample of DIR)")  # fmt: skip
    ev.add_argument("--which", choices=["best", "latest"], default="best", help="checkpoint (default best)")
    ev.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.set_defaults(handler=run_evaluate_segmenter)
    add_experiment_parser(sub)


def add_experiment_parser(sub) -> None:
    """Add ``experiment`` (the augmentation-value experiment, :mod:`core.task.experiment`) to ``sub``."""
    from core.task.data import OVERFLOW
    from core.task.model import ARCHS, NORMS

    ex = sub.add_parser("experiment", help="does synthetic data help? train a segmenter on real data alone and with "
                                           "each synthetic source at several ratios (and augmentations), repeated; "
                                           "table, plots and JSON of the test mIoU; resumable")  # fmt: skip
    ex.add_argument("--data", required=True, metavar="DIR", help="real dataset folder with label maps")
    ex.add_argument("--synthetic", action="append", default=[], metavar="NAME=DIR",
                    help="a synthetic source: a name for the table and its folder (repeat for several); make it "
                         "from the train split only, so that no test image leaks into it")  # fmt: skip
    ex.add_argument("--make", default="", metavar="KIND,KIND,...",
                    help="sources the experiment makes itself from its train split (no val or test image can reach "
                         "them): composite, recombined, mined, adversarial (default: none)")  # fmt: skip
    ex.add_argument("--ratios", default="0,0.5,1,2", metavar="R,R,...",
                    help="synthetic samples per real training sample (default 0,0.5,1,2; 0 = real only)")  # fmt: skip
    ex.add_argument("--standard-aug", default="none,flip", metavar="AUG,AUG,...",
                    help="standard augmentations to cross with every row (default none,flip; also scale, "
                         "flip+scale, color, full)")  # fmt: skip
    ex.add_argument("--synthetic-only", type=float, default=1.0, metavar="R",
                    help="synthetic-only rows train on R x n_train samples of each source (default 1; 0: none)")  # fmt: skip
    ex.add_argument("--repeats", type=int, default=3, metavar="K", help="trainings per row, seeds SEED..SEED+K-1 "
                                                                        "(default 3)")  # fmt: skip
    ex.add_argument("--steps", type=int, default=1000, metavar="N", help="optimizer steps per training (default 1000)")
    ex.add_argument("--size", type=int, default=128, help="square training side (default 128)")
    ex.add_argument("--split", default="0.6,0.2,0.2", metavar="TR,VA,TE",
                    help="train,val,test split of the real samples, fixed by --seed for every row and repeat: counts "
                         "(30,10,10) or fractions (default 0.6,0.2,0.2)")  # fmt: skip
    ex.add_argument("--seed", type=int, default=0, help="seed of the split and of the first repeat (default 0)")
    ex.add_argument("--out", required=True, metavar="EXP", help="experiment folder (rerun it to continue)")
    ex.add_argument("--batch", type=int, default=8, metavar="B", help="samples per step (default 8)")
    ex.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    ex.add_argument("--arch", choices=list(ARCHS), default="unet", help="network (default unet)")
    ex.add_argument("--width", type=int, default=32, help="U-Net base channels (default 32)")
    ex.add_argument("--depth", type=int, default=4, help="U-Net downsamplings (default 4)")
    ex.add_argument("--norm", choices=list(NORMS), default="group", help="U-Net normalisation (default group)")
    ex.add_argument("--val-every", type=int, default=0, metavar="K",
                    help="validate and checkpoint every K steps (default: a tenth of --steps)")  # fmt: skip
    ex.add_argument("--overflow", choices=list(OVERFLOW), default="repeat",
                    help="when a ratio asks for more synthetic samples than a source holds: repeat (default) or cap")  # fmt: skip
    ex.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ex.set_defaults(handler=run_experiment_command)


def experiment_config_from_args(args: argparse.Namespace):
    """The :class:`core.task.experiment.ExperimentConfig` the arguments ask for (its folders checked).

    Raises:
        InvalidInput: a ``--synthetic`` without ``=``, a missing folder, a bad ratio, augmentation or setting.
    """
    from core.task.experiment import ExperimentConfig, check_folders, parse_names, parse_numbers, parse_source

    config = ExperimentConfig(
        data=str(args.data), synthetic=tuple(parse_source(s) for s in args.synthetic),
        make_sources=parse_names(args.make) if args.make else (),
        ratios=parse_numbers(args.ratios, "--ratios"), standard_aug=parse_names(args.standard_aug),
        repeats=args.repeats, steps=args.steps, size=args.size, split=args.split, seed=args.seed,
        synthetic_only=args.synthetic_only, overflow=args.overflow, batch=args.batch, lr=args.lr, arch=args.arch,
        width=args.width, depth=args.depth, norm=args.norm, val_every=args.val_every, device=args.device,
    )  # fmt: skip
    check_folders(config)
    return config


def run_experiment_command(args: argparse.Namespace) -> int:
    """``segstudio experiment``: run (or continue) the experiment, print the table and the wall time."""
    from core.task.experiment import run_experiment

    config = experiment_config_from_args(args)
    result = run_experiment(config, args.out, progress=_stderr_progress())
    print(result.table.read_text(encoding="utf-8"))
    print(f"{len(result.trained)} runs trained, {len(result.skipped)} already finished, in {result.seconds:.0f} s; "
          f"results in {args.out} (table.md, results.json, miou_vs_ratio.png, class_gains.png)")  # fmt: skip
    return 0


def config_from_args(args: argparse.Namespace):
    """The :class:`core.task.trainer.SegmenterConfig` the arguments ask for.

    Raises:
        InvalidInput: ``--ratio`` or ``--overflow`` without ``--synthetic``, or a bad setting.
    """
    from core.task.trainer import SegmenterConfig

    if not args.synthetic and (args.ratio is not None or args.overflow is not None):
        raise InvalidInput("--ratio and --overflow apply to synthetic samples; add --synthetic DIR, or drop them")
    overrides = {field: getattr(args, dest) for dest, field in TRAIN_OPTIONS.items() if getattr(args, dest) is not None}
    if args.pretrained:
        overrides["pretrained"] = True
    if args.no_amp:
        overrides["amp"] = False
    return SegmenterConfig(data=str(args.data), synthetic=tuple(args.synthetic), **overrides)


def _stderr_progress():
    last = [-1.0]

    def report(fraction: float | None, message: str = "") -> None:
        if fraction is not None and (fraction >= 1.0 or fraction - last[0] >= 0.01):
            last[0] = fraction
            print(message, file=sys.stderr, flush=True)

    return report


def run_train_segmenter(args: argparse.Namespace) -> int:
    """``segstudio train-segmenter``: train (or resume) and print one summary line."""
    from core.task.trainer import train_segmenter

    config = config_from_args(args)
    result = train_segmenter(config, args.out, progress=_stderr_progress(), resume=args.resume)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    best = (f"best val mIoU {result.best_val_miou:.4f} at step {result.best_step}" if result.best_step is not None
            else "no validation samples, no best checkpoint")  # fmt: skip
    print(f"trained segmenter to step {result.step} in {args.out} ({result.steps_per_second:.2f} steps/s; "
          f"loss {result.loss:.4g}; {best})")  # fmt: skip
    return 0


def run_evaluate_segmenter(args: argparse.Namespace) -> int:
    """``segstudio evaluate-segmenter``: evaluate a run's checkpoint on its split of a dataset."""
    from core.task.evaluate import evaluate_segmenter

    split = None if args.split == "all" else args.split
    result = evaluate_segmenter(args.run, args.data, which=args.which, split=split, device=args.device)
    if args.split == "all":
        result.split = "all"
    print(json.dumps(result.to_json()) if args.json else result.to_text())
    return 0
