"""Evaluating segmenters: confusion matrices, IoU, runs evaluated on datasets, predictions, per-sample scores.

Conventions:

- The confusion matrix is ``C x C`` int64 with rows = ground truth, columns = prediction. Pixels whose ground
  truth is 255 (ignore) are skipped whatever was predicted there.
- ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``. A class absent from both the ground truth and the prediction (over
  everything evaluated) has no IoU (``None`` / NaN) and is left out of the mean: **mIoU is the mean over the
  classes present in the ground truth or the prediction**. A class predicted but absent from the ground truth
  counts with IoU 0 (its false positives are real errors).
- Pixel accuracy is ``trace / total`` over non-ignored pixels.
- :func:`evaluate_segmenter` and :func:`predict` work at the images' own sizes: the image is resized to the run's
  training side, the logits are resized back bilinearly and the argmax taken there. The in-run validation of
  :mod:`core.task.trainer` works at the training side instead (cheaper), so its numbers differ slightly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InvalidInput, SampleProblem
from core.types import ClassSet

if TYPE_CHECKING:
    import torch

IGNORE = 255
WHICH = ("best", "latest")


# ---- metrics ----------------------------------------------------------------------------------------------------


def confusion_matrix(prediction: np.ndarray, label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Count ``(ground truth, prediction)`` pixel pairs.

    Args:
        prediction: ``... x H x W`` uint8 class indices, each ``< num_classes``.
        label_map: the same shape, uint8 class indices or 255 (ignore: those pixels are skipped).
        num_classes: ``C``.

    Returns:
        ``C x C`` int64, rows = ground truth, columns = prediction.

    Raises:
        InvalidInput: shapes differ, or a value is out of range (named with the accepted range).
    """
    pred = np.asarray(prediction)
    gt = np.asarray(label_map)
    if pred.shape != gt.shape:
        raise InvalidInput(f"prediction shape {pred.shape} differs from the label map's {gt.shape}; they must match")
    if not 1 <= num_classes <= 255:
        raise InvalidInput(f"num_classes must be 1 to 255, got {num_classes}")
    valid = gt != IGNORE
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if g.size and g.max() >= num_classes:
        raise InvalidInput(f"the label map holds value {int(g.max())}; accepted: 0..{num_classes - 1} and 255 (ignore)")
    if p.size and (p.max() >= num_classes or p.min() < 0):
        bad = int(p.max()) if p.max() >= num_classes else int(p.min())
        raise InvalidInput(f"the prediction holds value {bad}; accepted: 0..{num_classes - 1}")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """``C`` float64 IoUs; NaN for classes absent from both ground truth and prediction."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over classes present in the ground truth or the prediction (NaN when no pixel was counted)."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Correct / counted pixels (NaN when none was counted)."""
    cm = np.asarray(confusion)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


@dataclass
class Metrics:
    """Scores of one confusion matrix.

    Attributes:
        confusion: ``C x C`` int64 (rows ground truth, columns prediction).
        iou: per-class IoU, ``None`` for classes absent from both.
        miou: mean over the non-``None`` IoUs.
        pixel_accuracy: correct / counted pixels.
        class_names: ``C`` names.
    """

    confusion: np.ndarray
    iou: list[float | None]
    miou: float
    pixel_accuracy: float
    class_names: list[str]

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, class_names: list[str]) -> Metrics:
        iou = iou_per_class(confusion)
        return cls(np.asarray(confusion, np.int64), [_num(v) for v in iou], mean_iou(confusion),
                   pixel_accuracy(confusion), list(class_names))  # fmt: skip

    def to_json(self) -> dict:
        return {
            "miou": _num(self.miou),
            "pixel_accuracy": _num(self.pixel_accuracy),
            "iou": {n: v for n, v in zip(self.class_names, self.iou, strict=True)},
            "classes_counted": [n for n, v in zip(self.class_names, self.iou, strict=True) if v is not None],
            "confusion": self.confusion.tolist(),
        }


# ---- a trained segmenter --------------------------------------------------------------------------------------


@dataclass
class LoadedSegmenter:
    """A run's network ready for inference.

    Attributes:
        net: the ``torch.nn.Module`` in eval mode on ``device``.
        classes: the run's class set.
        size: the training side images are resized to before the network.
        step: the checkpoint's step; ``which``: ``"best"`` or ``"latest"`` (what was loaded, after any fallback).
        note: ``""`` or why another checkpoint than asked was loaded.
    """

    net: object
    classes: ClassSet
    size: int
    step: int
    which: str
    device: str
    run_dir: Path
    val_miou: float | None = None
    note: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes.names)

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """``H x W x 3 uint8`` -> ``1 x C x H x W`` float32 logits (on the model's device)."""
        import torch
        from torch.nn import functional as F

        x = _image_tensor(_check_image(image), self.size, self.device)
        with torch.no_grad():
            out = self.net(x).float()
        return F.interpolate(out, size=image.shape[:2], mode="bilinear", align_corners=False)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``H x W x 3 uint8`` RGB -> ``H x W uint8`` class indices."""
        import torch

        return self.logits(image).argmax(1)[0].to(torch.uint8).cpu().numpy()


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInput(f"an image must be H x W x 3 uint8 RGB, got shape {image.shape} and dtype {image.dtype}")
    return image


def _image_tensor(image: np.ndarray, size: int, device) -> torch.Tensor:
    """``H x W x 3 uint8`` -> ``1 x 3 x size x size`` float32 in ``[0, 1]`` (bilinear resize)."""
    import cv2
    import torch

    if image.shape[:2] != (size, size):
        image = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0


def load_segmenter(run_dir: str | Path, which: str = "best", device: str = "auto") -> LoadedSegmenter:
    """Load a run's best (highest validation mIoU) or latest checkpoint.

    ``which="best"`` falls back to the latest checkpoint when the run has no best one (no validation samples,
    or not validated yet); ``note`` says so.

    Raises:
        InvalidInput: ``which`` unknown, or the folder holds no checkpoint.
    """
    from safetensors.torch import load_file

    from core.device import resolve_policy
    from core.task.model import build_segmenter
    from core.task.trainer import BEST_DIR, BEST_FILE, CHECKPOINT_FILE, MODEL_FILE, SegmenterConfig, read_checkpoint

    if which not in WHICH:
        raise InvalidInput(f"which {which!r} is unknown; accepted: {', '.join(WHICH)}")
    run_dir = Path(run_dir)
    doc = read_checkpoint(run_dir)
    note, val = "", None
    best = run_dir / BEST_DIR / BEST_FILE
    if which == "best" and best.is_file():
        bdoc = json.loads(best.read_text(encoding="utf-8"))
        weights, step, val = run_dir / BEST_DIR / bdoc["file"], int(bdoc["step"]), bdoc.get("val_miou")
    else:
        if which == "best":
            note = f"{run_dir} has no best checkpoint (no validation samples, or none evaluated yet); used the latest"
            which = "latest"
        weights, step = run_dir / doc["folder"] / MODEL_FILE, int(doc["step"])
    if not weights.is_file():
        raise InvalidInput(f"{weights} is missing although {CHECKPOINT_FILE} lists it; the run folder is damaged")
    config = SegmenterConfig.from_json(doc["config"])
    classes = ClassSet.from_json(doc["classes"])
    policy = resolve_policy(device)
    net = build_segmenter(config.arch, len(classes.names), width=config.width, depth=config.depth, norm=config.norm)
    net.load_state_dict(load_file(str(weights), device="cpu"))
    net = net.to(policy.device).eval()
    return LoadedSegmenter(net, classes, config.size, step, which, policy.device, run_dir, val, note)


def predict(run_dir: str | Path | LoadedSegmenter, images, which: str = "best", device: str = "auto") -> list[np.ndarray]:
    """Label maps for images at their own sizes.

    Args:
        run_dir: a run folder (or an already loaded segmenter).
        images: a sequence of ``H x W x 3 uint8`` RGB images (sizes may differ).

    Returns:
        one ``H x W uint8`` map of class indices per image.
    """
    model = run_dir if isinstance(run_dir, LoadedSegmenter) else load_segmenter(run_dir, which, device)
    return [model.predict(img) for img in images]


def score_sample(model: LoadedSegmenter, image: np.ndarray, label_map: np.ndarray) -> float:
    """mIoU of the model's prediction for ``image`` against ``label_map`` (classes present in either).

    Args:
        model: from :func:`load_segmenter`.
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` class indices, 255 = ignore.

    Raises:
        SampleProblem: the label map is all ignore (nothing to score), or its size differs from the image's.
    """
    image = _check_image(image)
    label_map = np.asarray(label_map)
    if label_map.shape != image.shape[:2] or label_map.dtype != np.uint8:
        raise SampleProblem(f"a label map must be H x W uint8 the size of its image {image.shape[:2]}, got shape "
                            f"{label_map.shape} and dtype {label_map.dtype}")  # fmt: skip
    if not (label_map != IGNORE).any():
        raise SampleProblem("the label map is all ignore (255): there is nothing to score")
    cm = confusion_matrix(model.predict(image), label_map, model.num_classes)
    return mean_iou(cm)


# ---- a run evaluated on a dataset -----------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """What :func:`evaluate_segmenter` measured."""

    run_dir: str
    data: str
    which: str
    step: int
    split: str | None
    samples: int
    metrics: Metrics
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    @property
    def miou(self) -> float:
        return self.metrics.miou

    def to_json(self) -> dict:
        return {"run": self.run_dir, "data": self.data, "checkpoint": self.which, "step": self.step,
                "split": self.split, "samples": self.samples, **self.metrics.to_json(),
                "skipped": [list(s) for s in self.skipped], "seconds": round(self.seconds, 3),
                "note": self.note}  # fmt: skip

    def to_text(self) -> str:
        """A short table: per-class IoU, then mIoU and pixel accuracy."""
        m = self.metrics
        lines = [f"{self.samples} samples ({self.split or 'given ids'}) of {self.data}, {self.which} checkpoint "
                 f"(step {self.step})"]  # fmt: skip
        width = max(len(n) for n in m.class_names)
        for name, iou in zip(m.class_names, m.iou, strict=True):
            lines.append(f"  {name:<{width}}  {'-' if iou is None else f'{iou:.4f}'}")
        lines.append(f"mIoU {m.miou:.4f} over {sum(v is not None for v in m.iou)} classes, "
                     f"pixel accuracy {m.pixel_accuracy:.4f}")  # fmt: skip
        if self.skipped:
            lines.append(f"{len(self.skipped)} samples skipped (first: {self.skipped[0][0]}: {self.skipped[0][1]})")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def read_split(run_dir: str | Path):
    """The :class:`core.task.data.Split` a run trained with (``split.json``)."""
    from core.task.data import Split
    from core.task.trainer import SPLIT_FILE

    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise InvalidInput(f"{run_dir} has no {SPLIT_FILE}; it is not a segmenter run folder")
    return Split.from_json(json.loads(path.read_text(encoding="utf-8"))["split"])


def evaluate_segmenter(run_dir: str | Path, data_root: str | Path, ids: list[str] | None = None, which: str = "best",
                       *, split: str | None = None, device: str = "auto", cache_dir: Path | None = None,
                       progress=None, cancel=None) -> EvaluationResult:  # fmt: skip
    """Evaluate a run's checkpoint on labelled samples of a dataset folder, at the label maps' own sizes.

    Args:
        run_dir: a segmenter run folder.
        data_root: the dataset folder (its class names must be the run's).
        ids: the samples (default: ``split``'s, or every labelled sample when ``split`` is ``None``).
        which: ``"best"`` or ``"latest"``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``: the ids of the run's own split (``split.json``);
            not together with ``ids``.
        device: ``auto``, ``cpu``, ``cuda``.

    Raises:
        InvalidInput: both ``ids`` and ``split``, unknown ids, other classes, no sample left to evaluate.
        Cancelled: ``cancel`` was set.
    """
    from core.progress import track
    from core.store import SkipReport
    from core.task.data import check_same_classes, open_store

    if ids is not None and split is not None:
        raise InvalidInput("give either ids or split, not both")
    began = time.perf_counter()
    model = load_segmenter(run_dir, which, device)
    store = open_store(data_root, cache_dir)
    check_same_classes(model.classes, store.classes, str(store.root))
    if split is not None:
        ids = read_split(run_dir).ids(split)
    chosen = list(ids) if ids is not None else store.labelled_ids()
    unknown = sorted(set(chosen) - set(store.ids))
    if unknown:
        raise InvalidInput(f"{len(unknown)} sample ids are not in {store.root} (first: {unknown[:3]}); evaluate the "
                           "dataset the run was trained on, or use split all")  # fmt: skip
    if not chosen:
        raise InvalidInput(f"no samples to evaluate ({'split ' + split if split else 'ids'} is empty)")
    skipped = SkipReport()
    c = model.num_classes
    cm = np.zeros((c, c), np.int64)
    count = 0
    for data in track(store.each(chosen, skipped=skipped), total=len(chosen), progress=progress, cancel=cancel,
                      message="evaluating"):  # fmt: skip
        cm += confusion_matrix(model.predict(data.image), data.label_map, c)
        count += 1
    if not count:
        raise InvalidInput(f"none of the {len(chosen)} samples could be read: {skipped.summary()}")
    return EvaluationResult(str(run_dir), str(store.root), model.which, model.step, split, count,
                            Metrics.from_confusion(cm, list(model.classes.names)),
                            [(p.sample_id or p.path, p.reason) for p in skipped.skipped],
                            time.perf_counter() - began, model.note)  # fmt: skip
