"""Segmenter training runs: ``train_segmenter(config, out_dir)`` writes a run folder and can resume it exactly.

Run folder::

    config.json                   the SegmenterConfig (steps and intervals updated on resume)
    split.json                    the real train / val / test ids, the synthetic folders and the drawn samples
    log.jsonl                     {"step", "seconds", "loss"} every log_every steps, plus "val_miou" and
                                  "val_pixel_accuracy" at every validation
    checkpoints/step_000100/      model.safetensors, state.pt (optimizer, grad scaler, RNG state, best so far)
    checkpoint.json               the latest complete checkpoint: step, files and their sha256, classes, config
    best/model_step_000100.safetensors, best/best.json
                                  the weights with the highest validation mIoU so far; best.json (step, val_miou,
                                  file, sha256) is written after its weights, so it always names a whole file

Every file is written atomically and ``checkpoint.json`` / ``best.json`` last. Training draws no randomness from
global generators: step ``t``'s batch is :func:`core.train.data.batch_indices` of ``(seed, t)`` and its
augmentation a generator seeded with ``(seed, t)``; the network starts from ``torch.manual_seed(seed)``. With
``torch.use_deterministic_algorithms(True)`` a run resumed on the CPU ends bitwise equal to an uninterrupted one.

Training: cross-entropy (ignore 255) averaged over labelled pixels, AdamW (or Adam) at a constant learning rate,
fp16 autocast with a grad scaler on CUDA (``amp``), fp32 on the CPU. Validation (every ``val_every`` steps and at
the end) predicts the val samples at the training side and computes mIoU as :mod:`core.task.evaluate` defines it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from core.errors import Cancelled, InvalidInput, refuse_unknown_keys, require_all
from core.io.atomic import atomic_write, atomic_write_text
from core.progress import CancelToken, ProgressFn, no_progress
from core.task.data import OVERFLOW, SegData, parse_augmentation, parse_split
from core.task.model import ARCHS, NORMS, check_model_options

CHECKPOINT_FILE = "checkpoint.json"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
LOG_FILE = "log.jsonl"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
BEST_DIR = "best"
BEST_FILE = "best.json"
KEEP_CHECKPOINTS = 2
OPTIMIZERS = ("adamw", "adam")
AUGMENT_STREAM = 1
# Settings that change what is computed from step to step; a resume must keep them.
CHANGEABLE_ON_RESUME = ("steps", "val_every", "checkpoint_every", "log_every", "device", "amp")


@dataclass(frozen=True)
class SegmenterConfig:
    """What a segmenter training run does.

    Attributes:
        data: the real dataset folder (read through :class:`core.store.DatasetStore`).
        synthetic: synthetic dataset folders whose samples join the train set (same class names as ``data``).
        ratio: synthetic samples per real training sample (``round(ratio * n_train)`` drawn by ``seed``); used only
            with ``synthetic`` folders.
        overflow: ``"repeat"`` or ``"cap"``: what happens when ``ratio`` asks for more synthetic samples than the
            folders hold (see :func:`core.task.data.draw_synthetic`).
        split: ``(train, val, test)`` counts or fractions of the real labelled samples (see
            :func:`core.task.data.split_ids`); only train samples are trained on.
        size: the square side samples are resized to.
        steps: optimizer steps in all (a resumed run continues up to this).
        batch: samples per step.
        lr: learning rate (constant); ``weight_decay``: AdamW's decoupled decay (Adam: L2 in the gradient).
        optimizer: ``"adamw"`` or ``"adam"``.
        seed: seed of the split, the synthetic draw, initialisation, batches and augmentation.
        arch, width, depth, norm, pretrained: the network (see :func:`core.task.model.build_segmenter`).
        standard_aug: ``"none"``, ``"flip"``, ``"scale"`` or ``"flip+scale"`` (see :mod:`core.task.data`).
        val_every: validate every this many steps (and at the end); 0: only at the end. Runs with no validation
            samples never validate and keep no best checkpoint.
        checkpoint_every: write the latest checkpoint every this many steps (and at the end).
        log_every: write a log line every this many steps.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: mixed precision (fp16 autocast) on CUDA; the CPU always trains in fp32.
    """

    data: str
    synthetic: tuple[str, ...] = ()
    ratio: float = 1.0
    overflow: str = "repeat"
    split: tuple = (0.6, 0.2, 0.2)
    size: int = 128
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    seed: int = 0
    arch: str = "unet"
    width: int = 32
    depth: int = 4
    norm: str = "group"
    pretrained: bool = False
    standard_aug: str = "flip+scale"
    val_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "synthetic", tuple(str(s) for s in self.synthetic))
        object.__setattr__(self, "split", parse_split(self.split))
        require_all(
            [
                (bool(str(self.data)), "data must name a dataset folder"),
                (self.ratio >= 0 and np.isfinite(self.ratio), f"ratio must be 0 or more, got {self.ratio}"),
                (self.overflow in OVERFLOW, f"overflow {self.overflow!r} is unknown; accepted: {', '.join(OVERFLOW)}"),
                (8 <= self.size <= 2048, f"size must be 8 to 2048 pixels, got {self.size}"),
                (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
                (self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
                (self.lr > 0, f"lr must be positive, got {self.lr}"),
                (self.weight_decay >= 0, f"weight_decay must be 0 or more, got {self.weight_decay}"),
                (self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r} is unknown; accepted: adamw, adam"),
                (self.arch in ARCHS, f"arch {self.arch!r} is unknown; accepted: {', '.join(ARCHS)}"),
                (self.norm in NORMS, f"norm {self.norm!r} is unknown; accepted: {', '.join(NORMS)}"),
                (self.val_every >= 0, f"val_every must be 0 or more, got {self.val_every}"),
                (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, got {self.checkpoint_every}"),
                (self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}"),
            ],
            "segmenter settings",
        )
        check_model_options(self.arch, 2, self.width, self.depth, self.norm, self.pretrained)
        parse_augmentation(self.standard_aug)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["synthetic"], doc["split"] = list(self.synthetic), list(self.split)
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> SegmenterConfig:
        """Read a config written by :meth:`to_json`; unknown keys are refused."""
        refuse_unknown_keys(cls, doc, "segmenter config has")
        return cls(**doc)

    def replace(self, **changes) -> SegmenterConfig:
        doc = self.to_json()
        doc.update(changes)
        return SegmenterConfig.from_json(doc)


@dataclass
class SegmenterResult:
    """What a finished run left.

    Attributes:
        run_dir: the run folder.
        step: the step reached.
        loss: the last step's loss.
        best_step, best_val_miou: the best checkpoint (``None`` without validation samples).
        last_val_miou: the last validation's mIoU (``None`` without validation).
        seconds: training time in all (across resumes); ``steps_per_second``: of this call.
        resumed_from: the step this call started from.
        notes: what the caller should know (synthetic overflow, skipped samples).
    """

    run_dir: Path
    step: int
    loss: float = float("nan")
    best_step: int | None = None
    best_val_miou: float | None = None
    last_val_miou: float | None = None
    seconds: float = 0.0
    steps_per_second: float = 0.0
    resumed_from: int = 0
    notes: list[str] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(run_dir: str | Path) -> dict:
    """The run's ``checkpoint.json``.

    Raises:
        InvalidInput: the folder holds no complete checkpoint.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise InvalidInput(f"{run_dir} holds no segmenter checkpoint ({CHECKPOINT_FILE} missing); train a run there "
                           "first (segstudio train-segmenter --out RUN)")  # fmt: skip
    return json.loads(path.read_text(encoding="utf-8"))


# ---- data of a run ------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The in-memory samples of a run: ``train`` (real then synthetic) and ``val``, at the training size."""

    train: SegData
    val: SegData
    doc: dict
    notes: list[str]


def prepare_data(config: SegmenterConfig, stored: dict | None, *, cache_dir: Path | None = None, progress=None,
                 cancel=None) -> RunData:  # fmt: skip
    """Split the real data, draw the synthetic samples, read them all at ``config.size``.

    Args:
        stored: a previous ``split.json`` (on resume): its ids are used as they are, so a dataset that gained
            samples since does not change the run.

    Raises:
        InvalidInput: no labelled sample, other classes in a synthetic folder, stored ids no longer present.
    """
    from core.task.data import Split, check_same_classes, concat, draw_synthetic, load_samples, open_store, split_ids

    store = open_store(config.data, cache_dir)
    real_ids = store.labelled_ids()
    if not real_ids:
        raise InvalidInput(f"{store.root} has no sample with a usable label map; training needs images with label "
                           "maps (for example JPEGImages/ with SegmentationClass/)")  # fmt: skip
    synth_stores = []
    for folder in config.synthetic:
        s = open_store(folder, None if cache_dir is None else cache_dir / f"synthetic_{len(synth_stores)}")
        check_same_classes(store.classes, s.classes, str(s.root))
        synth_stores.append(s)
    if stored is not None:
        split = Split.from_json(stored["split"])
        chosen = [(int(f), str(i)) for f, i in stored["synthetic"]["chosen"]]
        note = stored["synthetic"].get("note", "")
        missing = sorted(set(split.ids("all")) - set(store.ids))
        if missing:
            raise InvalidInput(f"{len(missing)} samples of the run's split are gone from {store.root} (first: "
                               f"{missing[:3]}); resume needs the data the run started with")  # fmt: skip
        present = [set(st.ids) for st in synth_stores]
        gone = [(f, i) for f, i in chosen if f >= len(present) or i not in present[f]]
        if gone:
            raise InvalidInput(f"{len(gone)} synthetic samples the run drew are gone (first: {gone[0][1]!r} of "
                               f"folder {gone[0][0]}); resume needs the synthetic folders the run started with")  # fmt: skip
        doc = stored
    else:
        split = split_ids(real_ids, config.split, config.seed)
        if not split.train:
            raise InvalidInput(f"the split {config.split} leaves no training sample of the {len(real_ids)} in "
                               f"{store.root}; give train a share")  # fmt: skip
        ratio = config.ratio if synth_stores else 0.0  # the ratio means nothing without synthetic folders
        draw = draw_synthetic([s.labelled_ids() for s in synth_stores], len(split.train), ratio, config.seed,
                              config.overflow)  # fmt: skip
        chosen, note = draw.chosen, draw.note
        doc = {"data": str(store.root), "split": split.to_json(),
               "synthetic": {"folders": [str(s.root) for s in synth_stores], **draw.to_json()}}  # fmt: skip
    parts = [load_samples(store, split.train, config.size, progress=progress, cancel=cancel)]
    for f, s in enumerate(synth_stores):
        ids = [i for g, i in chosen if g == f]
        if ids:
            once = load_samples(s, sorted(set(ids)), config.size, prefix=f"{s.root}::", cancel=cancel)
            where = {sid: k for k, sid in enumerate(once.ids)}
            keep = [where[f"{s.root}::{i}"] for i in ids if f"{s.root}::{i}" in where]
            parts.append(SegData(once.images[keep], once.label_maps[keep], [once.ids[k] for k in keep], once.classes,
                                 once.skipped))  # fmt: skip
    train = concat(parts)
    val = load_samples(store, split.val, config.size, cancel=cancel)
    notes = [note] if note else []
    skipped = train.skipped + val.skipped
    if skipped:
        notes.append(f"{len(skipped)} samples could not be read and were left out (first: {skipped[0][0]}: "
                     f"{skipped[0][1]})")  # fmt: skip
    if not len(train):
        raise InvalidInput(f"none of the training samples of {store.root} could be read: {skipped[:3]}")
    return RunData(train, val, doc, notes)


# ---- the run ------------------------------------------------------------------------------------------------


class _Run:
    """Network, optimizer and data of one run, on one device."""

    def __init__(self, config: SegmenterConfig, data: RunData):
        import torch

        from core.device import resolve_policy
        from core.task.model import build_segmenter

        self.config, self.data = config, data
        policy = resolve_policy(config.device)
        self.device = torch.device(policy.device)
        self.amp = bool(config.amp and policy.is_cuda)
        self.num_classes = data.train.num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = build_segmenter(config.arch, self.num_classes, width=config.width, depth=config.depth,
                                  norm=config.norm, pretrained=config.pretrained)  # fmt: skip
        self.net = net.to(self.device)
        opt = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.opt = opt(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.best: dict | None = None  # {"step", "val_miou"}

    def autocast(self):
        import torch

        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def _tensors(self, images: np.ndarray, labels: np.ndarray | None = None):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        y = None if labels is None else torch.from_numpy(labels.astype(np.int64)).to(self.device)
        return x, y

    def step(self, step: int) -> float:
        """One optimizer step on step ``step``'s batch; returns the loss."""
        import torch
        from torch.nn import functional as F

        from core.task.data import augment_batch
        from core.train.data import batch_indices

        cfg, train = self.config, self.data.train
        idx = batch_indices(len(train), cfg.batch, step, cfg.seed)
        rng = np.random.default_rng([cfg.seed, step, AUGMENT_STREAM])
        images, labels = augment_batch(train.images[idx], train.label_maps[idx], cfg.standard_aug, rng)
        x, y = self._tensors(images, labels)
        self.net.train()
        with self.autocast():
            logits = self.net(x)
        counted = (y != 255).sum().clamp_min(1)
        loss = F.cross_entropy(logits.float(), y, ignore_index=255, reduction="sum") / counted
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach().item()) if torch.isfinite(loss) else float("nan")

    def validate(self):
        """:class:`core.task.evaluate.Metrics` on the val samples at the training size (``None`` without any)."""
        import torch

        from core.task.evaluate import Metrics, confusion_matrix

        val = self.data.val
        if not len(val):
            return None
        c = self.num_classes
        cm = np.zeros((c, c), np.int64)
        self.net.eval()
        with torch.no_grad():
            for k in range(0, len(val), self.config.batch):
                x, _ = self._tensors(val.images[k : k + self.config.batch])
                with self.autocast():
                    pred = self.net(x).float().argmax(1).to(torch.uint8).cpu().numpy()
                cm += confusion_matrix(pred, val.label_maps[k : k + self.config.batch], c)
        self.net.train()
        return Metrics.from_confusion(cm, list(val.classes.names))

    # ---- checkpoints ------------------------------------------------------------------------------------------

    def _write_weights(self, path: Path, step: int) -> str:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        meta = {"arch": self.config.arch, "step": str(step), "classes": json.dumps(list(self.data.train.classes.names))}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        return sha256_file(path)

    def save(self, run_dir: Path, step: int) -> Path:
        import torch

        folder = run_dir / "checkpoints" / f"step_{step:06d}"
        model_sha = self._write_weights(folder / MODEL_FILE, step)
        state = {"step": step, "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict(), "rng": _rng_state(),
                 "best": json.dumps(self.best)}  # fmt: skip
        atomic_write(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))
        doc = {"step": step, "folder": f"checkpoints/{folder.name}",
               "model": {"file": f"{folder.name}/{MODEL_FILE}", "sha256": model_sha},
               "state": {"file": f"{folder.name}/{STATE_FILE}", "sha256": sha256_file(folder / STATE_FILE)},
               "best": self.best, "classes": self.data.train.classes.to_json(),
               "config": self.config.to_json()}  # fmt: skip
        atomic_write_text(run_dir / CHECKPOINT_FILE, json.dumps(doc, indent=2) + "\n")
        _prune(sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p != folder), KEEP_CHECKPOINTS - 1)
        return folder

    def save_best(self, run_dir: Path, step: int, miou: float) -> None:
        name = f"model_step_{step:06d}.safetensors"
        sha = self._write_weights(run_dir / BEST_DIR / name, step)
        self.best = {"step": step, "val_miou": miou}
        doc = {"step": step, "val_miou": miou, "file": name, "sha256": sha}
        atomic_write_text(run_dir / BEST_DIR / BEST_FILE, json.dumps(doc, indent=2) + "\n")
        for old in (run_dir / BEST_DIR).glob("model_step_*.safetensors"):
            if old.name != name:
                old.unlink()

    def load(self, run_dir: Path) -> int:
        import torch
        from safetensors.torch import load_file

        doc = read_checkpoint(run_dir)
        folder = run_dir / doc["folder"]
        self.net.load_state_dict(load_file(str(folder / MODEL_FILE), device=str(self.device)))
        state = torch.load(folder / STATE_FILE, map_location=self.device, weights_only=True)
        self.opt.load_state_dict(state["opt"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.best = json.loads(state["best"])
        return int(state["step"])


def _prune(older: list[Path], keep: int) -> None:
    for stale in older[: max(0, len(older) - keep)]:
        for f in stale.iterdir():
            f.unlink()
        stale.rmdir()


def _rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _read_log(run_dir: Path, up_to: int) -> tuple[list[str], float]:
    """Log lines with ``step <= up_to`` and the seconds reached by the last of them."""
    from core.io.runlog import log_up_to

    return log_up_to(run_dir / LOG_FILE, up_to)


def read_log(run_dir: str | Path) -> list[dict]:
    """The run's log records, in order (lines cut by a crash skipped)."""
    from core.io.runlog import read_log as read_jsonl_log

    return read_jsonl_log(Path(run_dir) / LOG_FILE)


def _resumed_config(run_dir: Path, config: SegmenterConfig) -> SegmenterConfig:
    old = SegmenterConfig.from_json(json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")))
    fixed = [f.name for f in fields(SegmenterConfig) if f.name not in CHANGEABLE_ON_RESUME]
    changed = [k for k in fixed if getattr(old, k) != getattr(config, k)]
    if changed:
        diffs = ", ".join(f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise InvalidInput(f"cannot resume with changed settings ({diffs}); only {', '.join(CHANGEABLE_ON_RESUME)} "
                           "may change; start a new run folder for other settings")  # fmt: skip
    return old.replace(**{k: getattr(config, k) for k in CHANGEABLE_ON_RESUME})


def train_segmenter(
    config: SegmenterConfig,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    resume: bool = False,
    *,
    cache_dir: Path | None = None,
) -> SegmenterResult:
    """Train a segmenter and write its run folder (see the module docstring).

    Args:
        config: the settings; with ``resume``, only :data:`CHANGEABLE_ON_RESUME` may differ from the run's.
        out_dir: the run folder (created when missing).
        progress: called with ``(fraction, message)`` while reading samples and after every step.
        cancel: checked before every step; when set, a checkpoint of the current step is written and
            :class:`core.errors.Cancelled` raised (``resume`` continues from there).
        resume: continue the run in ``out_dir`` from its latest checkpoint (a folder without one starts fresh).
        cache_dir: the dataset's workspace folder (default: the store's).

    Raises:
        InvalidInput: ``out_dir`` already holds a run and ``resume`` is false; settings changed on resume; no usable
            training sample; the loss became NaN / infinite (a checkpoint of the step before is kept).
        ModelUnavailable: ``pretrained`` and the backbone weights are not installed.
        Cancelled: ``cancel`` was set.
    """
    import torch

    report = progress or no_progress
    run_dir = Path(out_dir)
    has_ckpt = (run_dir / CHECKPOINT_FILE).is_file()
    if (has_ckpt or (run_dir / CONFIG_FILE).is_file()) and not resume:
        raise InvalidInput(f"{run_dir} already holds a training run; pass resume to continue it, or choose a new "
                           "folder")  # fmt: skip
    if has_ckpt:
        config = _resumed_config(run_dir, config)
    stored = None
    if has_ckpt and (run_dir / SPLIT_FILE).is_file():
        stored = json.loads((run_dir / SPLIT_FILE).read_text(encoding="utf-8"))
    data = prepare_data(config, stored, cache_dir=cache_dir, progress=progress, cancel=cancel)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_json(), indent=2) + "\n")
    if stored is None:
        atomic_write_text(run_dir / SPLIT_FILE, json.dumps(data.doc, indent=2) + "\n")

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    run = _Run(config, data)
    torch.use_deterministic_algorithms(True, warn_only=run.device.type != "cpu")
    if run.device.type != "cpu":
        from core.device import quiet_nondeterminism_warnings

        quiet_nondeterminism_warnings()
    torch.utils.deterministic.fill_uninitialized_memory = False  # nothing reads uninitialised memory; the fill costs
    try:
        start = run.load(run_dir) if has_ckpt else 0
        if start > config.steps:
            raise InvalidInput(f"the run is at step {start}, past steps={config.steps}; ask for more steps to resume")
        log_lines, seconds0 = _read_log(run_dir, start)
        atomic_write_text(run_dir / LOG_FILE, "".join(line + "\n" for line in log_lines))
        began, loss, saved, last_val = time.perf_counter(), float("nan"), start if has_ckpt else -1, None
        with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log:
            for step in range(start, config.steps):
                if cancel is not None and cancel.cancelled:
                    if saved != step:
                        run.save(run_dir, step)
                    raise Cancelled(f"training was cancelled at step {step}; a checkpoint is in {run_dir} (resume "
                                    f"continues from step {step})")  # fmt: skip
                loss = run.step(step)
                done = step + 1
                if not np.isfinite(loss):
                    if saved != step:
                        run.save(run_dir, step)
                    raise InvalidInput(f"training diverged at step {done} (loss {loss}); lower lr or resume from the "
                                       f"checkpoint in {run_dir}")  # fmt: skip
                record = {}
                final = done == config.steps
                if final or (config.val_every and done % config.val_every == 0):
                    metrics = run.validate()
                    if metrics is not None:
                        last_val = metrics.miou
                        record = {"val_miou": _round(metrics.miou), "val_pixel_accuracy": _round(metrics.pixel_accuracy)}
                        if np.isfinite(metrics.miou) and (run.best is None or metrics.miou > run.best["val_miou"]):
                            run.save_best(run_dir, done, float(metrics.miou))
                elapsed = seconds0 + time.perf_counter() - began
                if record or final or done % config.log_every == 0:
                    log.write(json.dumps({"step": done, "seconds": round(elapsed, 4), "loss": _round(loss), **record})
                              + "\n")  # fmt: skip
                    log.flush()
                if final or done % config.checkpoint_every == 0:
                    run.save(run_dir, done)
                    saved = done
                rate = (done - start) / max(1e-9, time.perf_counter() - began)
                eta = (config.steps - done) / rate if rate > 0 else 0.0
                val_text = f", val mIoU {last_val:.3f}" if last_val is not None else ""
                report(done / config.steps, f"step {done}/{config.steps}, loss {loss:.4f}{val_text}, "
                                            f"{rate:.2f} steps/s, ETA {eta:.0f} s")  # fmt: skip
        wall = time.perf_counter() - began
        trained = config.steps - start
        best = run.best or {}
        return SegmenterResult(run_dir, config.steps, loss, best.get("step"), best.get("val_miou"), last_val,
                               seconds0 + wall, trained / wall if trained and wall > 0 else 0.0, start,
                               data.notes)  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def _round(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None
