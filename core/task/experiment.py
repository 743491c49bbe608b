"""The augmentation-value experiment: does synthetic data help a segmenter, and how much of it?

``run_experiment(config, out_dir)`` trains one segmenter per row and repeat and compares them on held-out real data.
For every repeat ``r`` and every standard augmentation ``a`` the rows are:

- ``real only`` (ratio 0): the real train split alone, the baseline;
- ``<source> x<ratio>`` for each synthetic source and each ratio > 0: the real train split plus
  ``round(ratio * n_train)`` samples drawn from the source (see :func:`core.task.data.draw_synthetic`);
- ``<source> only`` (with ``synthetic_only`` > 0): ``round(synthetic_only * n_train)`` samples of the source alone.

Each row is trained with :func:`core.task.trainer.train_segmenter` into ``out_dir/runs/<row>/``; its best
checkpoint by validation mIoU (on the real val split) is evaluated on the real test split with
:func:`core.task.evaluate.evaluate_segmenter`, at the label maps' own sizes (mIoU from the confusion matrix summed over
the test images; 255 ignored).

**The split** of the real labelled samples is fixed by ``seed`` and is the same for every row *and every repeat*.
Repeat ``r`` trains with seed ``seed + r``: initialisation, batch order, the synthetic draw and the augmentation
change, the split does not. Synthetic folders must be made from the train split alone (so that no val or test
image leaks into them), and that only holds for a split that stays put; the spread over repeats is therefore
training noise, not the noise of choosing 10 test images. The gain of a row is the mean (± std) over repeats of its
test mIoU minus the baseline's *of the same repeat and augmentation* (paired: same seed, same split).

How the split stays fixed while the trainer's seed moves: the trainer splits its data folder by its own seed, so each
repeat trains on a *view*, ``out_dir/data/<view>/``: the train and val samples at the training size (PNG, lossless;
the trainer would resize to that size anyway) under placeholder names chosen so that the trainer's split for
seed ``seed + r`` is exactly those train and val samples (checked with :func:`core.task.data.split_ids` after
naming). ``view.json`` maps names back to sample ids. Test images never enter a view; synthetic-only rows train on a
view of the drawn synthetic samples plus the real val samples.

Output folder::

    experiment.json      the ExperimentConfig (a rerun with other fixed settings is refused)
    split.json           the fixed split (real sample ids) and its seed
    data/<view>/         the views (VOC layout, classes.json, view.json)
    runs/<row>/          one training run per row (see core.task.trainer); result.json once it is evaluated
    results.json         every finished run (settings, test mIoU, per-class IoU, wall time) and the summary
    table.md             mean ± std over repeats per (source, ratio, aug), gain vs real only, per-class IoU
    miou_vs_ratio.png    test mIoU vs ratio per source (error bars: std over repeats), one panel per augmentation
    class_gains.png      per-class IoU gain vs real only, one panel per augmentation

**Resume**: rerunning on the same folder skips rows whose ``result.json`` exists and continues an interrupted row
from its latest checkpoint. ``repeats``, ``ratios``, ``standard_aug``, ``synthetic`` (new names), ``synthetic_only``
and ``device`` may change between runs (rows are independent); the other settings may not.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from core.errors import Cancelled, InvalidInput, refuse_unknown_keys, require_all
from core.io.atomic import atomic_write, atomic_write_text
from core.progress import CancelToken, ProgressFn, no_progress
from core.task.data import OVERFLOW, parse_augmentation, parse_split
from core.task.sources import MADE_SOURCES

EXPERIMENT_FILE = "experiment.json"
SPLIT_FILE = "split.json"
RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"
RESULT_FILE = "result.json"
VIEW_FILE = "view.json"
MIOU_PLOT = "miou_vs_ratio.png"
GAINS_PLOT = "class_gains.png"
BASELINE = "real"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
# Settings a rerun on the same folder may change (rows are independent of them); the rest must stay.
CHANGEABLE = ("repeats", "ratios", "standard_aug", "synthetic", "make_sources", "synthetic_only", "device")
SOURCES_DIR = "synthetic"
EXPERIMENTS_DIR = "experiments"


# ---- settings -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentConfig:
    """What the augmentation-value experiment trains and compares.

    Attributes:
        data: the real dataset folder (labelled samples are split into train / val / test).
        synthetic: ``(name, folder)`` per synthetic source; names label the table (letters, digits, ``_.-``; not
            ``"real"``). Synthetic folders must have the real data's classes.
        make_sources: sources the experiment makes itself from its train split, after fixing it (see
            :mod:`core.task.sources`: ``composite``, ``recombined``, ``mined``, ``adversarial``), into
            ``out_dir/synthetic/<kind>``; ``round(max(max ratio, synthetic_only) * n_train)`` samples each. The safe
            way to compare sources: no val or test image can reach them.
        ratios: synthetic samples per real training sample; 0 is the real-only baseline (always trained).
        standard_aug: standard augmentations to cross with every row (see :mod:`core.task.data`).
        repeats: trainings per row, with seeds ``seed .. seed + repeats - 1``.
        steps, size, batch, lr, arch, width, depth, norm: the segmenter's training (see
            :class:`core.task.trainer.SegmenterConfig`).
        split: ``(train, val, test)`` counts or fractions of the real labelled samples; fixed by ``seed``.
        seed: the split's seed and the first repeat's training seed.
        synthetic_only: synthetic-only rows train on ``round(synthetic_only * n_train)`` samples of each source (1:
            as many as the real train split); 0: no synthetic-only rows.
        overflow: ``"repeat"`` or ``"cap"`` when a ratio asks for more samples than a source holds.
        val_every: validate (and checkpoint) every this many steps; 0: ``max(1, steps // 10)``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    data: str
    synthetic: tuple[tuple[str, str], ...] = ()
    make_sources: tuple[str, ...] = ()
    ratios: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    standard_aug: tuple[str, ...] = ("none", "flip")
    repeats: int = 3
    steps: int = 1000
    size: int = 128
    split: tuple = (0.6, 0.2, 0.2)
    seed: int = 0
    synthetic_only: float = 1.0
    overflow: str = "repeat"
    batch: int = 8
    lr: float = 1e-3
    arch: str = "unet"
    width: int = 32
    depth: int = 4
    norm: str = "group"
    val_every: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        pairs = tuple((str(n), str(d)) for n, d in self.synthetic)
        object.__setattr__(self, "synthetic", pairs)
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        object.__setattr__(self, "standard_aug", tuple(str(a) for a in self.standard_aug))
        object.__setattr__(self, "make_sources", tuple(str(k) for k in self.make_sources))
        object.__setattr__(self, "split", parse_split(self.split))
        names = [n for n, _ in pairs]
        unknown_made = [k for k in self.make_sources if k not in MADE_SOURCES]
        clashes = sorted(set(names) & set(self.make_sources))
        bad_names = [n for n in names if not NAME_PATTERN.match(n) or n.lower() == BASELINE]
        bad_ratios = [r for r in self.ratios if not (math.isfinite(r) and r >= 0)]
        require_all(
            [
                (bool(str(self.data)), "data must name a dataset folder"),
                (not bad_names, f"synthetic source name {bad_names[0] if bad_names else ''!r} is not accepted; use "
                                "1 to 40 letters, digits, '_', '.', '-' (starting with a letter or digit), not "
                                f"'{BASELINE}'"),  # fmt: skip
                (len(set(names)) == len(names), f"synthetic source names must be unique, got {names}"),
                (not unknown_made, f"source kind {unknown_made[0] if unknown_made else ''!r} cannot be made by the "
                                   f"experiment; accepted: {', '.join(MADE_SOURCES)}"),  # fmt: skip
                (len(set(self.make_sources)) == len(self.make_sources),
                 f"sources to make must not repeat, got {list(self.make_sources)}"),  # fmt: skip
                (not clashes, f"synthetic source name {clashes[0] if clashes else ''!r} is also a source the "
                              "experiment makes; rename the folder's source"),  # fmt: skip
                (bool(self.ratios), "ratios must name at least one ratio (0 is the real-only baseline)"),
                (not bad_ratios, f"ratio {bad_ratios[0] if bad_ratios else ''} is not accepted; ratios are synthetic "
                                 "samples per real training sample, 0 or more"),  # fmt: skip
                (len(set(self.ratios)) == len(self.ratios), f"ratios must not repeat, got {list(self.ratios)}"),
                (bool(self.standard_aug), "standard_aug must name at least one augmentation (none, flip, ...)"),
                (len(set(self.standard_aug)) == len(self.standard_aug),
                 f"standard_aug must not repeat, got {list(self.standard_aug)}"),  # fmt: skip
                (self.repeats >= 1, f"repeats must be at least 1, got {self.repeats}"),
                (math.isfinite(self.synthetic_only) and self.synthetic_only >= 0,
                 f"synthetic_only must be 0 or more (synthetic samples per real training sample), got "
                 f"{self.synthetic_only}"),  # fmt: skip
                (self.overflow in OVERFLOW, f"overflow {self.overflow!r} is unknown; accepted: {', '.join(OVERFLOW)}"),
                (self.val_every >= 0, f"val_every must be 0 or more, got {self.val_every}"),
            ],
            "experiment settings",
        )
        if any(r > 0 for r in self.ratios) and not pairs and not self.make_sources:
            raise InvalidInput(f"ratios {[r for r in self.ratios if r > 0]} need synthetic sources; add "
                               "--synthetic NAME=DIR or --make composite,..., or use ratio 0 alone")  # fmt: skip
        for aug in self.standard_aug:
            parse_augmentation(aug)
        self.segmenter_config(str(self.data), self.seed, self.standard_aug[0], (1, 1, 0))  # checks the training knobs

    @property
    def validate_every(self) -> int:
        return self.val_every or max(1, self.steps // 10)

    def segmenter_config(self, data: str, seed: int, aug: str, split: tuple, synthetic: tuple[str, ...] = (),
                         ratio: float = 1.0):  # fmt: skip
        """The :class:`core.task.trainer.SegmenterConfig` of one row."""
        from core.task.trainer import SegmenterConfig

        return SegmenterConfig(data=data, synthetic=synthetic, ratio=ratio, overflow=self.overflow, split=split,
                               size=self.size, steps=self.steps, batch=self.batch, lr=self.lr, seed=seed,
                               arch=self.arch, width=self.width, depth=self.depth, norm=self.norm, standard_aug=aug,
                               val_every=self.validate_every, checkpoint_every=self.validate_every,
                               log_every=max(1, min(10, self.validate_every)), device=self.device)  # fmt: skip

    def to_json(self) -> dict:
        doc = asdict(self)
        doc.update(synthetic=[list(p) for p in self.synthetic], make_sources=list(self.make_sources),
                   ratios=list(self.ratios),
                   standard_aug=list(self.standard_aug), split=list(self.split))  # fmt: skip
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> ExperimentConfig:
        refuse_unknown_keys(cls, doc, "experiment config has")
        return cls(**{**doc, "synthetic": tuple(tuple(p) for p in doc.get("synthetic", ()))})


def parse_source(text: str) -> tuple[str, str]:
    """``"composite=out/comp"`` -> ``("composite", "out/comp")``.

    Raises:
        InvalidInput: no ``=``, an empty name or folder.
    """
    name, sep, folder = str(text).partition("=")
    name, folder = name.strip(), folder.strip()
    if not sep or not name or not folder:
        raise InvalidInput(f"synthetic source {text!r} is not NAME=DIR; give a name for the table, '=', and the "
                           "folder, e.g. composite=runs/composites")  # fmt: skip
    return name, folder


def parse_numbers(text: str, what: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` -> ``(0.0, 0.5, 1.0)``; ``what`` names the option in the error.

    Raises:
        InvalidInput: a part that is not a number.
    """
    out = []
    for part in str(text).split(","):
        try:
            out.append(float(part.strip()))
        except ValueError:
            raise InvalidInput(f"{what} {text!r}: {part.strip()!r} is not a number; give comma-separated numbers "
                               "like 0,0.5,1,2") from None  # fmt: skip
    return tuple(out)


def parse_names(text: str) -> tuple[str, ...]:
    """``"none, flip"`` -> ``("none", "flip")`` (empty parts dropped)."""
    return tuple(p.strip() for p in str(text).split(",") if p.strip())


def check_folders(config: ExperimentConfig) -> None:
    """Raise :class:`InvalidInput` naming the first folder of ``config`` that does not exist."""
    for label, folder in [("data", config.data)] + [(f"synthetic source {n!r}", d) for n, d in config.synthetic]:
        if not Path(folder).is_dir():
            raise InvalidInput(f"{label} folder {folder} does not exist (or is not a folder); give a dataset folder")


# ---- rows ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One training of the experiment.

    Attributes:
        kind: ``"real"`` (real only), ``"mix"`` (real + synthetic at ``ratio``) or ``"only"`` (synthetic only).
        source: ``"real"`` or the synthetic source's name.
        ratio: synthetic samples per real training sample (0 for real only; the synthetic-only share for ``only``).
        aug: the standard augmentation.
        repeat: the repeat index (training seed ``config.seed + repeat``).
    """

    kind: str
    source: str
    ratio: float
    aug: str
    repeat: int

    @property
    def label(self) -> str:
        """The row's name in the table: ``real only``, ``composite x0.5``, ``composite only``."""
        return {"real": "real only", "mix": f"{self.source} x{self.ratio:g}", "only": f"{self.source} only"}[self.kind]

    @property
    def name(self) -> str:
        """The run folder's name: ``real_none_rep0``, ``composite_x0.5_flip_rep1``, ``composite_only_none_rep0``."""
        middle = {"real": "real", "mix": f"{self.source}_x{self.ratio:g}", "only": f"{self.source}_only"}[self.kind]
        return f"{middle}_{self.aug}_rep{self.repeat}"

    @property
    def group(self) -> tuple[str, str, float, str]:
        return (self.kind, self.source, self.ratio, self.aug)


def plan_rows(config: ExperimentConfig) -> list[Row]:
    """Every row, repeat by repeat (so a stopped experiment has whole repeats first), then augmentation."""
    rows = []
    for r in range(config.repeats):
        for aug in config.standard_aug:
            rows.append(Row("real", BASELINE, 0.0, aug, r))
            for name, _ in config.synthetic:
                rows += [Row("mix", name, ratio, aug, r) for ratio in config.ratios if ratio > 0]
            if config.synthetic_only > 0:
                rows += [Row("only", name, config.synthetic_only, aug, r) for name, _ in config.synthetic]
    return rows


def count_runs(config: ExperimentConfig) -> int:
    """How many trainings ``config`` asks for, the sources it makes itself included."""
    made = tuple((k, k) for k in config.make_sources)
    return len(plan_rows(replace(config, synthetic=config.synthetic + made, make_sources=())))


# ---- experiments kept in a workspace ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentInfo:
    """An experiment folder as the studio lists it.

    Attributes:
        path: the folder; name: its name; config: its settings; finished_runs / total_runs: trainings evaluated so far
        and asked for; state, message: its background job's (see :mod:`core.train.jobs`; ``idle`` when none ran).
    """

    path: Path
    name: str
    config: ExperimentConfig
    finished_runs: int
    total_runs: int
    state: str
    message: str = ""


def experiments_root(cache_root: str | Path) -> Path:
    """Where the studio keeps a dataset's experiments: ``<cache_root>/experiments`` (never the dataset folder)."""
    return Path(cache_root) / EXPERIMENTS_DIR


def experiment_info(folder: str | Path) -> ExperimentInfo | None:
    """What an experiment folder holds, or ``None`` when it holds none (no readable settings)."""
    from core.train.jobs import job_state
    from core.train.runs import REQUEST_FILE

    folder = Path(folder)
    doc = None
    for name, key in ((EXPERIMENT_FILE, None), (REQUEST_FILE, "experiment")):
        try:
            raw = json.loads((folder / name).read_text(encoding="utf-8"))
            doc = raw if key is None else raw.get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(doc, dict):
            break
    try:
        config = ExperimentConfig.from_json(doc) if isinstance(doc, dict) else None
    except (InvalidInput, TypeError):
        config = None
    if config is None:
        return None
    done = sum(1 for _ in (folder / "runs").glob(f"*/{RESULT_FILE}")) if (folder / "runs").is_dir() else 0
    state, message = job_state(folder)
    return ExperimentInfo(folder, folder.name, config, done, count_runs(config), state, message)


def list_experiments(root: str | Path) -> list[ExperimentInfo]:
    """The experiments under ``root`` (one folder each), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [info for child in root.iterdir() if child.is_dir() and (info := experiment_info(child)) is not None]
    return sorted(found, key=lambda e: e.path.stat().st_ctime, reverse=True)


# ---- views ---------------------------------------------------------------------------------------------------


def write_view(folder: Path, train, val, seed: int, meta: dict) -> tuple[int, int]:
    """Write ``train`` then ``val`` samples (:class:`core.task.data.SegData`, same size and classes) as a VOC-layout
    folder whose split by ``seed`` into ``(len(train), len(val), 0)`` is exactly ``train`` and ``val``.

    Skipped when ``folder/view.json`` already records the same ``meta`` and seed. Returns the two counts.

    Raises:
        InvalidInput: the trainer's split does not come out as intended (split_ids changed its contract).
    """
    from core.io.images import save_image, save_label_map
    from core.task.data import split_ids

    n_tr, n_va = len(train), len(val)
    names = [f"v{k:05d}" for k in range(n_tr + n_va)]
    ids = list(train.ids) + list(val.ids)
    doc = {"seed": int(seed), "meta": meta, "counts": [n_tr, n_va]}
    marker = folder / VIEW_FILE
    if marker.is_file():
        old = json.loads(marker.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in doc} == doc and old.get("ids") == ids:
            return n_tr, n_va
    # split_ids of (n, 0, 0) is its seeded order; naming the k-th of that order after the k-th sample we want puts
    # train first and val after it, whatever the order is.
    order = split_ids(names, (n_tr + n_va, 0, 0), seed).train
    folder.mkdir(parents=True, exist_ok=True)
    images = np.concatenate([train.images, val.images])
    labels = np.concatenate([train.label_maps, val.label_maps])
    for k, name in enumerate(order):
        save_image(folder / "JPEGImages" / f"{name}.png", images[k])
        save_label_map(folder / "SegmentationClass" / f"{name}.png", labels[k], train.classes)
    atomic_write_text(folder / "classes.json", json.dumps(train.classes.to_json(), indent=2) + "\n")
    check = split_ids(names, (n_tr, n_va, 0), seed)
    if check.train != order[:n_tr] or check.val != order[n_tr:]:
        raise InvalidInput(f"the view {folder} does not split as intended for seed {seed}; split_ids no longer "
                           "cuts a seeded order (the experiment relies on it)")  # fmt: skip
    atomic_write_text(marker, json.dumps({**doc, "ids": ids, "names": dict(zip(order, ids, strict=True))},
                                         indent=2) + "\n")  # fmt: skip
    return n_tr, n_va


def _take(data, rows: list[int]):
    from core.task.data import SegData

    return SegData(data.images[rows], data.label_maps[rows], [data.ids[k] for k in rows], data.classes)


# ---- results ------------------------------------------------------------------------------------------------


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` left.

    Attributes:
        out_dir: the experiment folder.
        runs: one record per finished row (as in ``results.json``).
        summary: one record per (source, ratio, aug) with mean ± std over repeats and the gain vs real only.
        trained: rows trained (or finished) by this call; ``skipped``: rows found finished.
        seconds: this call's wall time.
    """

    out_dir: Path
    runs: list[dict]
    summary: list[dict]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def table(self) -> Path:
        return self.out_dir / TABLE_FILE


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summarize(runs: list[dict], class_names: list[str], rows: list[Row]) -> list[dict]:
    """Mean ± std over repeats per (kind, source, ratio, aug), in plan order; gains are paired with the real-only run
    of the same repeat and augmentation (``None`` when that is missing)."""
    by_row = {r["row"]: r for r in runs}
    base = {(r["aug"], r["repeat"]): r for r in runs if r["kind"] == "real"}
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    out = []
    for (kind, source, ratio, aug), members in groups.items():
        done = [by_row[m.name] for m in members if m.name in by_row]
        miou, miou_sd = _mean_std([d["test_miou"] for d in done])
        paired = [(d, base[(aug, d["repeat"])]) for d in done if (aug, d["repeat"]) in base]
        gains = [d["test_miou"] - b["test_miou"] for d, b in paired
                 if d["test_miou"] is not None and b["test_miou"] is not None]  # fmt: skip
        gain, gain_sd = _mean_std(gains) if kind != "real" else (None, None)
        iou, iou_gain = {}, {}
        for c in class_names:
            iou[c] = _mean_std([d["test_iou"].get(c) for d in done])[0]
            diffs = [d["test_iou"][c] - b["test_iou"][c] for d, b in paired
                     if d["test_iou"].get(c) is not None and b["test_iou"].get(c) is not None]  # fmt: skip
            iou_gain[c] = _mean_std(diffs)[0] if kind != "real" else None
        out.append({"kind": kind, "source": source, "label": members[0].label, "ratio": ratio, "aug": aug,
                    "runs": len(done), "planned": len(members), "test_miou_mean": miou, "test_miou_std": miou_sd,
                    "gain_mean": gain, "gain_std": gain_sd, "gain_runs": len(gains), "iou_mean": iou,
                    "iou_gain_mean": iou_gain,
                    "wall_seconds_mean": _mean_std([d["wall_seconds"] for d in done])[0]})  # fmt: skip
    return out


def _fmt(mean: float | None, sd: float | None, runs: int, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return f"{text} ± {sd:.4f}" if runs > 1 and sd is not None else text


def render_table(config: ExperimentConfig, split: dict, summary: list[dict], class_names: list[str],
                 total_seconds: float) -> str:  # fmt: skip
    """The Markdown report: settings, the mIoU table, the per-class table."""
    n = [len(split["train"]), len(split["val"]), len(split["test"])]
    sources = ", ".join(f"`{name}` = {folder}" for name, folder in config.synthetic) or "none"
    lines = [
        "# Augmentation-value experiment",
        "",
        f"Real data: {config.data}; split train / val / test = {n[0]} / {n[1]} / {n[2]} by seed {config.seed}, the "
        f"same for every row and repeat. Synthetic sources: {sources}.",
        f"{config.repeats} repeats (training seeds {config.seed}..{config.seed + config.repeats - 1}: initialisation, "
        f"batches, synthetic draw, augmentation); {config.steps} steps, batch {config.batch}, {config.size} x "
        f"{config.size}, {config.arch} (width {config.width}, depth {config.depth}), lr {config.lr:g}; best "
        f"checkpoint by val mIoU (validated every {config.validate_every} steps).",
        "Test mIoU: confusion summed over the test images at their own sizes, 255 ignored; mean ± std over repeats. "
        "Gain: test mIoU minus real only's of the same repeat and augmentation, mean ± std over repeats. Ratio: "
        "synthetic samples per real training sample"
        + (f"; *only* rows train on {config.synthetic_only:g} x as many synthetic samples as the real train split "
           "holds, and no real sample." if config.synthetic_only else "."),
        f"Wall time of the runs: {total_seconds:.0f} s.",
        "",
        "| rows | ratio | aug | runs | test mIoU | gain vs real only |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        ratio = "only" if s["kind"] == "only" else f"{s['ratio']:g}"
        runs = f"{s['runs']}" if s["runs"] == s["planned"] else f"{s['runs']}/{s['planned']}"
        gain = "(baseline)" if s["kind"] == "real" else _fmt(s["gain_mean"], s["gain_std"], s["gain_runs"], True)
        lines.append(f"| {s['label']} | {ratio} | {s['aug']} | {runs} | "
                     f"{_fmt(s['test_miou_mean'], s['test_miou_std'], s['runs'])} | {gain} |")  # fmt: skip
    lines += ["", "Per-class test IoU, mean over repeats (gain vs real only in brackets):", "",
              "| rows | aug | " + " | ".join(class_names) + " |", "|---|---|" + "---|" * len(class_names)]  # fmt: skip
    for s in summary:
        cells = []
        for c in class_names:
            v, g = s["iou_mean"][c], s["iou_gain_mean"][c]
            cells.append("-" if v is None else f"{v:.3f}" + ("" if g is None else f" ({g:+.3f})"))
        lines.append(f"| {s['label']} | {s['aug']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def plot_results(summary: list[dict], config: ExperimentConfig, class_names: list[str], out_dir: Path) -> list[Path]:
    """Draw ``miou_vs_ratio.png`` and ``class_gains.png`` (matplotlib's Agg canvas; pyplot is not touched)."""
    from matplotlib.figure import Figure

    augs = list(config.standard_aug)
    names = [n for n, _ in config.synthetic]
    colors = {n: f"C{k % 10}" for k, n in enumerate(names)}
    by = {(s["kind"], s["source"], s["ratio"], s["aug"]): s for s in summary}

    fig = Figure(figsize=(4.6 * len(augs), 3.8), layout="constrained")
    axes = fig.subplots(1, len(augs), squeeze=False)[0]
    for ax, aug in zip(axes, augs, strict=True):
        base = by.get(("real", BASELINE, 0.0, aug))
        if base and base["test_miou_mean"] is not None:
            m, sd = base["test_miou_mean"], base["test_miou_std"] or 0.0
            ax.axhline(m, color="0.4", linestyle="--", linewidth=1, label="real only")
            ax.axhspan(m - sd, m + sd, color="0.85", zorder=0)
        for name in names:
            pts = [(0.0, base)] if base else []
            pts += [(r, by.get(("mix", name, r, aug))) for r in sorted(config.ratios) if r > 0]
            pts = [(r, s) for r, s in pts if s and s["test_miou_mean"] is not None]
            if pts:
                ax.errorbar([r for r, _ in pts], [s["test_miou_mean"] for _, s in pts],
                            yerr=[s["test_miou_std"] or 0.0 for _, s in pts], marker="o", capsize=3,
                            color=colors[name], label=f"real + {name}")  # fmt: skip
            only = by.get(("only", name, config.synthetic_only, aug))
            if only and only["test_miou_mean"] is not None:
                ax.axhline(only["test_miou_mean"], color=colors[name], linestyle=":", linewidth=1.2,
                           label=f"{name} only")  # fmt: skip
        ax.set_title(f"standard aug: {aug}")
        ax.set_xlabel("synthetic samples per real training sample")
        ax.set_ylabel("test mIoU")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    paths = [out_dir / MIOU_PLOT]
    _save_figure(fig, paths[0])

    fig = Figure(figsize=(max(5.0, 1.2 + 0.9 * len(class_names)) * len(augs), 3.8), layout="constrained")
    axes = fig.subplots(1, len(augs), squeeze=False)[0]
    for ax, aug in zip(axes, augs, strict=True):
        rows = [s for s in summary if s["aug"] == aug and s["kind"] != "real"]
        width = 0.8 / max(1, len(rows))
        x = np.arange(len(class_names))
        for k, s in enumerate(rows):
            gains = [s["iou_gain_mean"][c] for c in class_names]
            ax.bar(x - 0.4 + width * (k + 0.5), [0.0 if g is None else g for g in gains], width,
                   color=colors.get(s["source"], "0.5"), alpha=0.35 + 0.65 * (k + 1) / len(rows),
                   hatch="//" if s["kind"] == "only" else None, label=s["label"])  # fmt: skip
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(x, class_names, rotation=30 if len(class_names) > 6 else 0, fontsize=8)
        ax.set_title(f"per-class IoU gain vs real only (aug {aug})", fontsize=9)
        ax.set_ylabel("IoU gain")
        ax.grid(axis="y", alpha=0.3)
        if rows:
            ax.legend(fontsize=6, ncol=2)
    paths.append(out_dir / GAINS_PLOT)
    _save_figure(fig, paths[1])
    return paths


# ---- the experiment ---------------------------------------------------------------------------------------------


def _check_rerun(out_dir: Path, config: ExperimentConfig) -> None:
    path = out_dir / EXPERIMENT_FILE
    if not path.is_file():
        return
    old = ExperimentConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    fixed = [f.name for f in fields(ExperimentConfig) if f.name not in CHANGEABLE]
    changed = [k for k in fixed if getattr(old, k) != getattr(config, k)]
    old_dirs = dict(old.synthetic)
    moved = [n for n, d in config.synthetic if n in old_dirs and old_dirs[n] != d]
    if changed or moved:
        diffs = [f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}" for k in changed]
        diffs += [f"source {n!r}: {old_dirs[n]} -> {dict(config.synthetic)[n]}" for n in moved]
        raise InvalidInput(f"{out_dir} holds an experiment with other settings ({'; '.join(diffs)}); only "
                           f"{', '.join(CHANGEABLE)} may change on a rerun (a source keeps its folder); choose a new "
                           "output folder for other settings")  # fmt: skip


def _fixed_split(out_dir: Path, config: ExperimentConfig, store) -> dict:
    from core.task.data import split_ids

    path = out_dir / SPLIT_FILE
    if path.is_file():
        doc = json.loads(path.read_text(encoding="utf-8"))
        gone = sorted(set(doc["train"] + doc["val"] + doc["test"]) - set(store.ids))
        if gone:
            raise InvalidInput(f"{len(gone)} samples of the experiment's split are gone from {store.root} (first: "
                               f"{gone[:3]}); rerun on the data the experiment started with, or a new folder")  # fmt: skip
        return doc
    ids = store.labelled_ids()
    if not ids:
        raise InvalidInput(f"{store.root} has no sample with a usable label map; the experiment needs images with "
                           "label maps")  # fmt: skip
    split = split_ids(ids, config.split, config.seed)
    empty = [name for name in ("train", "val", "test") if not getattr(split, name)]
    if empty:
        raise InvalidInput(f"the split {config.split} of the {len(ids)} labelled samples of {store.root} leaves "
                           f"{', '.join(empty)} empty; the experiment needs train, val (best checkpoint) and test "
                           "samples")  # fmt: skip
    doc = split.to_json()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return doc


def make_experiment_sources(config: ExperimentConfig, out_dir: Path, store, split: dict,
                            progress: ProgressFn, cancel: CancelToken | None) -> tuple[tuple[str, str], ...]:  # fmt: skip
    """Make ``config.make_sources`` from the train split alone (see :mod:`core.task.sources`); returns their
    ``(name, folder)`` pairs. Already made sources with the same count, seed and train ids are kept."""
    from core.task.sources import TRAIN_VIEW, make_source, write_train_view

    if not config.make_sources:
        return ()
    n_train = len(split["train"])
    count = max(1, round(max(max(config.ratios), config.synthetic_only) * n_train))
    progress(0.0, f"writing the {n_train} train samples as a folder to make sources from")
    view = write_train_view(store, split["train"], out_dir / SOURCES_DIR / TRAIN_VIEW)
    made = []
    for kind in config.make_sources:
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"the experiment was cancelled while making sources; rerun on {out_dir} to continue")
        folder = out_dir / SOURCES_DIR / kind
        make_source(kind, view, folder, count, config.seed, classes=list(store.classes.names),
                    progress=lambda f, m="", k=kind: progress(0.0, f"making the {k} source: {m}"),
                    cancel=cancel)  # fmt: skip
        made.append((kind, str(folder)))
    return tuple(made)


class _Views:
    """The experiment's view folders, written on first use."""

    def __init__(self, out_dir: Path, config: ExperimentConfig, store, split: dict, cancel):
        self.out_dir, self.config, self.store, self.split, self.cancel = out_dir, config, store, split, cancel
        self._real = None
        self._val = None
        self.notes: list[str] = []

    def real(self):
        from core.task.data import load_samples

        if self._real is None:
            size = self.config.size
            self._real = load_samples(self.store, self.split["train"], size, cancel=self.cancel)
            self._val = load_samples(self.store, self.split["val"], size, cancel=self.cancel)
            skipped = self._real.skipped + self._val.skipped
            if skipped:
                self.notes.append(f"{len(skipped)} real samples could not be read and were left out (first: "
                                  f"{skipped[0][0]}: {skipped[0][1]})")  # fmt: skip
            if not len(self._real) or not len(self._val):
                raise InvalidInput(f"no readable {'train' if not len(self._real) else 'val'} sample in "
                                   f"{self.store.root}: {skipped[:3]}")  # fmt: skip
        return self._real, self._val

    def for_repeat(self, repeat: int) -> tuple[Path, tuple[int, int, int]]:
        """The real train + val view of a repeat and the trainer's split counts for it."""
        train, val = self.real()
        seed = self.config.seed + repeat
        folder = self.out_dir / "data" / f"real_rep{repeat}"
        meta = {"kind": "real", "size": self.config.size, "data": str(self.store.root)}
        n_tr, n_va = write_view(folder, train, val, seed, meta)
        return folder, (n_tr, n_va, 0)

    def synthetic_only(self, name: str, folder: str, repeat: int) -> tuple[Path, tuple[int, int, int], int]:
        """A view of ``round(synthetic_only * n_train)`` samples of a source plus the real val samples."""
        from core.task.data import check_same_classes, draw_synthetic, load_samples, open_store

        train, val = self.real()
        seed = self.config.seed + repeat
        source = open_store(folder)
        check_same_classes(self.store.classes, source.classes, str(source.root))
        draw = draw_synthetic([source.labelled_ids()], len(train), self.config.synthetic_only, seed,
                              self.config.overflow)  # fmt: skip
        ids = [i for _, i in draw.chosen]
        once = load_samples(source, sorted(set(ids)), self.config.size, prefix=f"{name}::", cancel=self.cancel)
        where = {sid: k for k, sid in enumerate(once.ids)}
        rows = [where[f"{name}::{i}"] for i in ids if f"{name}::{i}" in where]
        if not rows:
            raise InvalidInput(f"none of the samples drawn from synthetic source {name!r} ({source.root}) could be "
                               f"read: {once.skipped[:3]}")  # fmt: skip
        if draw.note:
            self.notes.append(f"{name} only: {draw.note}")
        view = self.out_dir / "data" / f"{name}_only_rep{repeat}"
        meta = {"kind": "only", "source": name, "folder": str(source.root), "size": self.config.size,
                "share": self.config.synthetic_only, "overflow": self.config.overflow}  # fmt: skip
        n_tr, n_va = write_view(view, _take(once, rows), val, seed, meta)
        return view, (n_tr, n_va, 0), n_tr


def run_experiment(config: ExperimentConfig, out_dir: str | Path, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> ExperimentResult:  # fmt: skip
    """Run (or continue) the augmentation-value experiment in ``out_dir`` (see the module docstring).

    Steps: 1. check the settings and folders (and, on a rerun, that the fixed settings did not change);
    2. fix the split of the real data; 3. train and evaluate every row not finished yet, writing ``result.json``
    per row and ``results.json`` after each; 4. write ``table.md`` and the plots.

    Args:
        config: the settings.
        out_dir: the experiment folder (created; a previous run there is continued).
        progress: ``(fraction, message)``; the message names the row being trained and its step.
        cancel: checked between and within runs (training checkpoints on cancel; a rerun continues from there).

    Raises:
        InvalidInput: a missing folder, other classes in a synthetic source, an empty split part, changed settings.
        Cancelled: ``cancel`` was set; finished rows are in ``results.json`` and the table.
    """
    from core.task.data import open_store
    from core.task.evaluate import evaluate_segmenter
    from core.task.trainer import SPLIT_FILE as RUN_SPLIT_FILE
    from core.task.trainer import train_segmenter

    began = time.perf_counter()
    report = progress or no_progress
    out_dir = Path(out_dir)
    # 1. settings and folders
    check_folders(config)
    _check_rerun(out_dir, config)
    store = open_store(config.data)
    class_names = list(store.classes.names)
    # 2. the fixed split
    split = _fixed_split(out_dir, config, store)
    atomic_write_text(out_dir / EXPERIMENT_FILE, json.dumps(config.to_json(), indent=2) + "\n")
    made = make_experiment_sources(config, out_dir, store, split, report, cancel)
    config = replace(config, synthetic=config.synthetic + made, make_sources=())
    views = _Views(out_dir, config, store, split, cancel)
    folders = dict(config.synthetic)
    rows = plan_rows(config)
    runs: list[dict] = []
    trained, skipped = [], []

    def write_results() -> list[dict]:
        """``results.json``, the table and the plots of the runs finished so far (a watcher sees them grow);
        returns the summary."""
        summary = summarize(runs, class_names, rows)
        doc = {"experiment": config.to_json(), "split": split, "classes": class_names,
               "versions": _versions(), "notes": views.notes, "runs": runs, "summary": summary}  # fmt: skip
        atomic_write_text(out_dir / RESULTS_FILE, json.dumps(doc, indent=2) + "\n")
        total = sum(r["wall_seconds"] for r in runs)
        atomic_write_text(out_dir / TABLE_FILE, render_table(config, split, summary, class_names, total))
        plot_results(summary, config, class_names, out_dir)
        return summary

    # 3. the rows
    try:
        for k, row in enumerate(rows):
            run_dir = out_dir / "runs" / row.name
            done_file = run_dir / RESULT_FILE
            if done_file.is_file():
                runs.append(json.loads(done_file.read_text(encoding="utf-8")))
                skipped.append(row.name)
                continue
            if cancel is not None and cancel.cancelled:
                raise Cancelled(f"the experiment was cancelled before run {k + 1}/{len(rows)} ({row.name}); rerun "
                                f"on {out_dir} to continue")  # fmt: skip
            title = f"run {k + 1}/{len(rows)} ({row.label}, aug {row.aug}, repeat {row.repeat})"
            report(k / len(rows), f"{title}: preparing data")
            t0 = time.perf_counter()
            seed = config.seed + row.repeat
            n_synth = 0
            if row.kind == "only":
                data, counts, n_synth = views.synthetic_only(row.source, folders[row.source], row.repeat)
                seg = config.segmenter_config(str(data), seed, row.aug, counts)
            else:
                data, counts = views.for_repeat(row.repeat)
                synthetic = (folders[row.source],) if row.kind == "mix" else ()
                seg = config.segmenter_config(str(data), seed, row.aug, counts, synthetic, row.ratio or 1.0)

            def step_report(fraction, message="", k=k, title=title):
                report((k + 0.95 * (fraction or 0.0)) / len(rows), f"{title}: {message}")

            result = train_segmenter(seg, run_dir, step_report, cancel, resume=True)
            if row.kind == "mix":
                drawn = json.loads((run_dir / RUN_SPLIT_FILE).read_text(encoding="utf-8"))["synthetic"]
                n_synth = len(drawn["chosen"])
            t1 = time.perf_counter()
            report((k + 0.96) / len(rows), f"{title}: evaluating on {len(split['test'])} test samples")
            ev = evaluate_segmenter(run_dir, config.data, ids=split["test"], which="best", device=config.device,
                                    cancel=cancel)  # fmt: skip
            metrics = ev.metrics.to_json()
            record = {"row": row.name, "label": row.label, "kind": row.kind, "source": row.source,
                      "ratio": row.ratio, "aug": row.aug, "repeat": row.repeat, "seed": seed,
                      "run_dir": str(run_dir.relative_to(out_dir)), "train_real": 0 if row.kind == "only" else counts[0],
                      "train_synthetic": n_synth, "steps": result.step, "best_step": result.best_step,
                      "best_val_miou": result.best_val_miou, "test_samples": ev.samples,
                      "test_miou": metrics["miou"], "test_pixel_accuracy": metrics["pixel_accuracy"],
                      "test_iou": metrics["iou"], "test_confusion": metrics["confusion"],
                      "train_seconds": round(result.seconds, 3), "eval_seconds": round(time.perf_counter() - t1, 3),
                      "wall_seconds": round(time.perf_counter() - t0, 3), "resumed_from": result.resumed_from,
                      "notes": list(result.notes) + ([ev.note] if ev.note else [])}  # fmt: skip
            atomic_write_text(done_file, json.dumps(record, indent=2) + "\n")
            runs.append(record)
            trained.append(row.name)
            write_results()
            report((k + 1) / len(rows), f"{title}: test mIoU {record['test_miou']:.4f}")
    except Cancelled:
        if runs:
            write_results()
        raise
    # 4. table and plots
    summary = write_results()
    report(1.0, f"experiment done: {len(trained)} runs trained, {len(skipped)} already finished")
    return ExperimentResult(out_dir, runs, summary, trained, skipped, time.perf_counter() - began)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "albumentations", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
