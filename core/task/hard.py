"""Task-aware hard-example compositing (issue 14): composites the current task model gets wrong.

Two ways, both on top of the random compositor (:mod:`core.generate.composite`) and its placement limits:

- **Mined** (cheap): for wanted composite ``i``, ``K`` random composites are made with the compositor itself
  (candidate ``k`` from ``numpy.random.default_rng([seed, i, k])``, so ``composite_sample(library, request, i,
  [seed, i, k])`` reproduces it), each is scored by the task model (:func:`hardness`: per-pixel cross-entropy
  of its prediction against the composite's label map, 255 ignored; or ``1 - mIoU``) and the hardest kept
  (the first on ties). Deterministic given the seed and the model.
- **Adversarial** (Tripathi et al. 2019, "Learning to generate synthetic data via compositing"): a small
  network (:func:`network_classes` ``Synthesizer``) looks at the background and the object (image + mask, at
  ``input_size``) and predicts the pasted object's rotation, size, position and feather. Raw outputs are
  squashed into the compositor's limits (:func:`constrain`):

  * angle ``= max_rotate * tanh``; flips are drawn from the seed (half of the time when ``placement.flip``);
  * area share (pixels pasted over the image's) log-uniformly within the *scale range* of
    :func:`share_range`: the class's observed shares (``size="data"``, narrowed by ``min/max_area_share``),
    or the kept share times ``placement.scale ** 2`` (``size="relative"``);
  * centre inside the image such that at most ``max_truncation`` of the object's pixels fall outside it:
    with ``a = max_truncation / 4``, the centre's x range keeps the ``a``-quantile of the (rotated, scaled)
    pixel offsets right of the left edge and the ``1 - a``-quantile left of the right edge, the same in y, so
    at most ``a`` of the pixels leave over each side (``4a`` in all, a union bound). The scale is capped so the
    object's central extent fits; an object that cannot fit at its smallest allowed scale is *infeasible* and
    never pasted;
  * Gaussian feather ``sigma = blend_size * sigmoid`` pixels at the composite's resolution (the blending
    choice; ``params.blend_size`` is the random compositor's blur size, 0 for ``blending="none"``).

  Pasting is differentiable (:func:`paste`): ``affine_grid`` + ``grid_sample`` warp the object's image
  (bilinear, reflected borders) and mask (bilinear, zeros outside); the image is blended with the feathered
  warped mask; the label map takes the object's class where the warped mask is over 0.5 and keeps the
  background map's value elsewhere, so labels only ever hold the background map's values and the pasted
  classes (never interpolated). The synthesizer's task loss (:func:`soft_task_loss`) uses the warped mask as a
  soft target, so gradients reach the transform through where the labels go as well as through the pixels.

  :func:`train_hard_synthesizer` alternates (Tripathi et al.): the synthesizer maximises the task model's loss
  on its composites while a small realism discriminator (real images vs composites) keeps them realistic
  (synthesizer loss ``= -task_loss + realism * softplus(-D(composite)) + keep_out * hidden_excess``, the last a
  penalty on hiding more of a background object than ``background_overlap`` allows); the discriminator learns
  real vs composite; the task model minimises its loss on real samples + the composites (hard labels). :func:`make_hard_composites`
  then pastes ``params.objects`` objects per composite at the backgrounds' own resolution, each drawn again
  (new noise, up to ``params.attempts`` times) when it breaks the truncation, overlap or background-object
  limits, as the random compositor does.

:func:`write_hard_composites` writes either kind as a VOC-layout folder with ``manifest.jsonl`` (the writer of
``segstudio generate --backend composite``), training a small task model first when none is given.

Importing this module does not import torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import Cancelled, InvalidInput, SampleProblem, require_all
from core.progress import CancelToken, ProgressFn, no_progress, track

if TYPE_CHECKING:
    import torch

    from core.generate.composite import CompositeParams, CompositeRequest
    from core.labels.recombine import RecombinedSample, RegionLibrary
    from core.labels.regions import Region
    from core.task.evaluate import LoadedSegmenter

MODES = ("mined", "adversarial")
METRICS = ("ce", "miou")
IGNORE = 255
RAW_OUTPUTS = 5  # angle, scale, x, y, feather
TRAIN_POINTS = 256  # mask pixels per object used for the truncation quantiles while training
FULL_POINTS = 4096  # ... when making composites at full resolution
MEAN_BOUND = 2.5  # the policy's mean raw outputs stay within +-this, so its noise always moves placements
KEEP_OUT_MARGIN = 0.8  # training penalises hiding more than this share of background_overlap (a margin under it)
SYNTH_FILE = "synthesizer.safetensors"
SYNTH_META = "synthesizer.json"


@dataclass(frozen=True)
class HardSettings:
    """How hard composites are made.

    Attributes:
        mode: ``mined`` or ``adversarial``.
        candidates: ``mined``: random composites scored per kept one (``K``).
        metric: hardness: ``ce`` (mean per-pixel cross-entropy, 255 ignored) or ``miou`` (``1 - mIoU``).
        steps: ``adversarial``: training steps (one synthesizer, one discriminator and, every ``task_every``
            steps, one task-model update each).
        batch: composites (and real samples) per step.
        synth_lr, disc_lr, task_lr: Adam learning rates of the synthesizer, discriminator and task model.
        realism: weight ``lambda`` of the discriminator's term in the synthesizer's loss. On the toy data (task
            losses ~0.1-0.4) ``lambda = 1`` shrank pasted objects to the smallest allowed size and left composites no
            harder than an untrained synthesizer's; 0.1 lets the task term lead.
        task_every: update the task model every this many steps; 0 keeps it fixed.
        width: base channels of the synthesizer and discriminator.
        input_size: side the synthesizer and discriminator see (capped at the task model's side).
        spread: std of the Gaussian noise added to the synthesizer's raw outputs before squashing (a stochastic
            policy, reparameterised: training moves its mean, bounded to +-``MEAN_BOUND``, so it never collapses to
            one placement per pair; retries and several objects per composite find room); 0 makes it
            deterministic per pair.
        keep_out: weight of the penalty on hiding more than ``background_overlap`` of one of the background's
            own objects (:func:`hidden_excess`; 0: none). Without it the synthesizer learns to paste over the
            background's objects (hard, but refused by that limit when composites are made); too much (10) keeps
            objects at their smallest size on object-dense backgrounds.
    """

    mode: str = "mined"
    candidates: int = 8
    metric: str = "ce"
    steps: int = 200
    batch: int = 8
    synth_lr: float = 1e-3
    disc_lr: float = 1e-3
    task_lr: float = 1e-4
    realism: float = 0.1
    task_every: int = 1
    width: int = 16
    input_size: int = 64
    spread: float = 1.0
    keep_out: float = 0.3

    def __post_init__(self) -> None:
        require_all([
            (self.mode in MODES, f"mode {self.mode!r} is unknown; accepted: {', '.join(MODES)}"),
            (1 <= self.candidates <= 256, f"candidates must be 1 to 256, got {self.candidates}"),
            (self.metric in METRICS, f"metric {self.metric!r} is unknown; accepted: {', '.join(METRICS)}"),
            (self.steps >= 0, f"steps must be 0 or more, got {self.steps}"),
            (self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
            (min(self.synth_lr, self.disc_lr, self.task_lr) > 0, "learning rates must be positive, got "
             f"synth {self.synth_lr}, disc {self.disc_lr}, task {self.task_lr}"),
            (self.realism >= 0, f"realism must be 0 or more, got {self.realism}"),
            (self.task_every >= 0, f"task_every must be 0 or more, got {self.task_every}"),
            (1 <= self.width <= 256, f"width must be 1 to 256 channels, got {self.width}"),
            (8 <= self.input_size <= 512, f"input_size must be 8 to 512 pixels, got {self.input_size}"),
            (0 <= self.spread <= 10, f"spread must be 0 to 10, got {self.spread}"),
            (self.keep_out >= 0, f"keep_out must be 0 or more, got {self.keep_out}"),
        ], "hard compositing")  # fmt: skip

    def record(self) -> dict:
        return asdict(self)


# ---- scoring ----------------------------------------------------------------------------------------------------


def as_task_model(task, device: str = "auto") -> LoadedSegmenter:
    """A :class:`core.task.evaluate.LoadedSegmenter`, or the best checkpoint of a segmenter run folder."""
    from core.task.evaluate import LoadedSegmenter, load_segmenter

    if isinstance(task, LoadedSegmenter):
        return task
    if isinstance(task, str | Path):
        return load_segmenter(task, "best", device)
    raise InvalidInput(f"a task model must be a segmenter run folder or a loaded segmenter, got {type(task).__name__}")


def hardness(model: LoadedSegmenter, image: np.ndarray, label_map: np.ndarray, metric: str = "ce") -> float:
    """How wrong the task model is on a sample: higher is harder.

    Args:
        model: a loaded segmenter (its prediction is made at the image's own size, as :func:`predict` does).
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` class indices, 255 = ignore.
        metric: ``ce``: mean cross-entropy over the labelled pixels; ``miou``: ``1 - mIoU`` (classes present in
            the label map or the prediction).

    Raises:
        SampleProblem: the label map is all ignore or not the image's size.
        InvalidInput: an unknown metric.
    """
    import torch
    from torch.nn import functional as F

    from core.task.evaluate import score_sample

    if metric not in METRICS:
        raise InvalidInput(f"metric {metric!r} is unknown; accepted: {', '.join(METRICS)}")
    if metric == "miou":
        return 1.0 - float(score_sample(model, image, label_map))
    label_map = np.asarray(label_map)
    if label_map.shape != np.asarray(image).shape[:2] or label_map.dtype != np.uint8:
        raise SampleProblem(f"a label map must be H x W uint8 the size of its image {np.asarray(image).shape[:2]}, "
                            f"got shape {label_map.shape} and dtype {label_map.dtype}")  # fmt: skip
    if not (label_map != IGNORE).any():
        raise SampleProblem("the label map is all ignore (255): there is nothing to score")
    logits = model.logits(image)
    target = torch.from_numpy(label_map.astype(np.int64)).to(logits.device)[None]
    return float(F.cross_entropy(logits, target, ignore_index=IGNORE).item())


def _task_record(model: LoadedSegmenter) -> dict:
    return {"run": str(model.run_dir) if model.run_dir is not None else None, "step": model.step,
            "checkpoint": model.which, "size": model.size}  # fmt: skip


# ---- the library a request draws from ------------------------------------------------------------------------------


def _library(store, request: CompositeRequest, ids: Sequence[str] | None) -> RegionLibrary:
    """A region library over ``store``, limited to ``ids`` (backgrounds and object sources) when given."""
    from core.labels.recombine import RegionLibrary

    library = RegionLibrary(store, request.min_area)
    if ids is not None:
        wanted = set(ids)
        unknown = sorted(wanted - set(store.ids))
        if unknown:
            raise InvalidInput(f"{len(unknown)} ids are not samples of {store.root} (first: {unknown[:3]})")
        library.present = {k: v for k, v in library.present.items() if k in wanted}
        if not library.present:
            raise InvalidInput(f"none of the {len(wanted)} given ids has a usable label map in {store.root}")
    return library


def _check_classes(model: LoadedSegmenter, store) -> None:
    from core.task.data import check_same_classes

    check_same_classes(model.classes, store.classes, str(store.root))


# ---- mined ------------------------------------------------------------------------------------------------------


def mine_composite(library: RegionLibrary, request: CompositeRequest, index: int, model: LoadedSegmenter,
                   candidates: int = 8, metric: str = "ce") -> RecombinedSample:  # fmt: skip
    """The hardest of ``candidates`` random composites for result ``index``.

    Candidate ``k`` is ``composite_sample(library, request, index, [request.seed, index, k])``; its record (kept,
    with ``id`` ``mined_<index>``, ``mode`` ``composite-mined``) gains ``hard``: the metric, every candidate's
    score (``None`` for one that did not fit), the chosen ``k`` and the task model.

    Raises:
        SampleProblem: no candidate fitted (a batch skips the result).
    """
    from core.generate.composite import composite_sample
    from core.labels.recombine import RecombinedSample

    scores: list[float | None] = []
    best, best_score, best_k = None, -math.inf, -1
    for k in range(candidates):
        try:
            cand = composite_sample(library, request, index, [request.seed, index, k])
            score = hardness(model, cand.result.image, cand.result.label_map, metric)
        except SampleProblem:
            scores.append(None)
            continue
        scores.append(round(score, 6))
        if score > best_score:
            best, best_score, best_k = cand, score, k
    if best is None:
        raise SampleProblem(f"mined composite {index}: none of the {candidates} candidates fitted within the limits")
    record = {**best.record, "id": f"mined_{index:06d}", "mode": "composite-mined",
              "hard": {"kind": "mined", "metric": metric, "candidates": candidates, "chosen": best_k,
                       "score": round(best_score, 6), "scores": scores, "task": _task_record(model)}}  # fmt: skip
    return RecombinedSample(record["id"], best.result, record)


# ---- networks ---------------------------------------------------------------------------------------------------


@functools.cache
def network_classes() -> dict[str, type]:
    """``Synthesizer`` and ``Discriminator``, defined on first use (importing this module does not load torch)."""
    import torch
    from torch import nn

    def groups(c: int) -> int:
        return next(g for g in range(min(8, c), 0, -1) if c % g == 0)

    class Synthesizer(nn.Module):
        """Background ``B x 3 x R x R`` and object ``B x 4 x R x R`` (image, mask; all in ``[0, 1]``) and features
        ``B x 2`` (log aspect, log kept share) -> ``B x 5`` raw transform outputs (angle, scale, x, y, feather; the
        policy's mean, squashed by :func:`constrain` after the noise is added)."""

        def __init__(self, width: int = 16):
            super().__init__()
            c = width
            self.width = width
            self.features = nn.Sequential(
                nn.Conv2d(7, c, 3, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(c, 2 * c, 3, 2, 1), nn.GroupNorm(groups(2 * c), 2 * c), nn.LeakyReLU(0.2),
                nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.GroupNorm(groups(4 * c), 4 * c), nn.LeakyReLU(0.2),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            )  # fmt: skip
            self.head = nn.Sequential(nn.Linear(64 * c + 2, 4 * c), nn.LeakyReLU(0.2),
                                      nn.Linear(4 * c, RAW_OUTPUTS))  # fmt: skip

        def forward(self, background, obj, feats):
            x = torch.cat([background - 0.5, obj[:, :3] - 0.5, obj[:, 3:]], 1)
            return self.head(torch.cat([self.features(x), feats], 1))

    class Discriminator(nn.Module):
        """``B x 3 x R x R`` images in ``[0, 1]`` -> ``B`` logits (real > 0)."""

        def __init__(self, width: int = 16):
            super().__init__()
            c = width
            self.net = nn.Sequential(
                nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, 1),
            )  # fmt: skip

        def forward(self, image):
            return self.net(image - 0.5).squeeze(1)

    return {"Synthesizer": Synthesizer, "Discriminator": Discriminator}


# ---- objects and their limits ----------------------------------------------------------------------------------


def share_range(region: Region, params: CompositeParams, sizes=None) -> tuple[float, float]:
    """The area shares (pasted pixels over the target's pixels) a region may take: the compositor's scale range.

    ``size="data"``: the smallest and largest share observed for the region's class (every class's when it has
    few objects; :meth:`core.labels.sizes.ObjectSizes.rows`), narrowed to ``[min_area_share, max_area_share]``.
    ``size="relative"``: the region's kept share (its area over its source map's) times ``scale[0] ** 2`` ..
    ``scale[1] ** 2``.
    """
    placement = params.placement
    sh, sw = region.source_shape
    if placement.size == "data":
        if sizes is None:
            from core.labels.sizes import ObjectSizes

            sizes = ObjectSizes.from_regions([region])
        rows = sizes.rows(region.class_index)
        if len(rows) == 0:
            raise InvalidInput("no object was measured in the dataset's label maps to draw sizes from")
        lo, hi = float(sizes.share[rows].min()), float(sizes.share[rows].max())
        lo, hi = max(lo, placement.min_area_share), min(hi, placement.max_area_share)
        lo = min(lo, hi)
    else:
        kept = region.area / max(1, sh * sw)
        lo, hi = kept * placement.scale[0] ** 2, kept * placement.scale[1] ** 2
    hi = min(max(hi, 1e-6), 1.0)
    return min(max(lo, 1e-6), hi), hi


def mask_points(mask: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` pixels of an ``h x w bool`` mask (evenly strided, in raster order) as ``count x 2 float32``
    ``(x, y)`` offsets from the crop centre ``(w / 2, h / 2)`` (the centre :class:`core.labels.overlay.Transform`
    rotates about); repeated when the mask has fewer pixels."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise InvalidInput("an object mask must hold at least one pixel")
    take = np.linspace(0, len(xs) - 1, count).round().astype(np.int64)
    h, w = mask.shape
    return np.stack([xs[take] - w / 2.0, ys[take] - h / 2.0], 1).astype(np.float32)


def object_canvas(region: Region, side: int | None = None) -> np.ndarray:
    """The region as ``4 x s x s float32`` (RGB in ``[0, 1]``, then the mask in ``[0, 1]``), resized to ``side``
    (``None``: its own ``h x w``). Resizing keeps ``grid_sample``'s normalised coordinates: the crop's corners
    stay at -1 / +1."""
    import cv2

    image = region.image.astype(np.float32) / 255.0
    mask = region.mask.astype(np.float32)
    if side is not None and region.mask.shape != (side, side):
        shrink = side < max(region.mask.shape)
        mode = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        image = cv2.resize(image, (side, side), interpolation=mode)
        mask = cv2.resize(mask, (side, side), interpolation=mode)
    return np.concatenate([image.transpose(2, 0, 1), mask[None]], 0)


@dataclass
class Objects:
    """A batch of objects ready for :func:`constrain` and :func:`paste` (all tensors on one device).

    Attributes:
        canvas: ``B x 4 x P x P float32`` image + mask (see :func:`object_canvas`).
        points: ``B x M x 2 float32`` mask pixel offsets from the crop centre (see :func:`mask_points`).
        crop: ``B x 2 float32`` crop ``(w, h)``.
        area: ``B float32`` mask pixels.
        shares: ``B x 2 float32`` area-share range (see :func:`share_range`).
        classes: ``B int64`` class indices.
        feats: ``B x 2 float32`` log aspect (w / h) and log kept share.
    """

    canvas: torch.Tensor
    points: torch.Tensor
    crop: torch.Tensor
    area: torch.Tensor
    shares: torch.Tensor
    classes: torch.Tensor
    feats: torch.Tensor

    @classmethod
    def build(cls, regions: Sequence[Region], ranges: Sequence[tuple[float, float]], side: int | None, points: int,
              device) -> Objects:  # fmt: skip
        """From regions (with images) and their share ranges; ``side`` ``None`` keeps each crop's own size (then
        the regions must share one crop size, e.g. a single region)."""
        import torch

        def t(a, dtype=torch.float32):
            return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

        feats = [[math.log((r.bbox[2] - r.bbox[0]) / (r.bbox[3] - r.bbox[1])),
                  math.log(r.area / max(1, r.source_shape[0] * r.source_shape[1]))] for r in regions]  # fmt: skip
        return cls(t(np.stack([object_canvas(r, side) for r in regions])),
                   t(np.stack([mask_points(r.mask, points) for r in regions])),
                   t([[r.mask.shape[1], r.mask.shape[0]] for r in regions]), t([r.area for r in regions]),
                   t(ranges), t([r.class_index for r in regions], torch.int64), t(feats))  # fmt: skip

    def take(self, index) -> Objects:
        return Objects(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


# ---- transforms inside the limits ---------------------------------------------------------------------------


@dataclass
class Constrained:
    """Transforms of a batch (``B`` rows), each inside the placement limits (see :func:`constrain`).

    Attributes:
        matrix: ``B x 2 x 3`` crop pixel -> target pixel affine (as :meth:`Transform.matrix`, pixel centres at
            integer coordinates).
        angle: ``B`` degrees; ``scale``: ``B`` linear factor; ``center``: ``B x 2`` ``(x, y)`` in target pixels;
            ``flip``: ``B`` (-1 mirrored, 1 not); ``sigma``: ``B`` feather in target pixels; ``feather``: ``B``
            share of the largest feather used.
        scale_range: ``B x 2`` scales of the share range; ``feasible``: ``B bool``: the range's smallest scale
            fits within the truncation limit (else the scale was cut below the range: never pasted).
    """

    matrix: torch.Tensor
    angle: torch.Tensor
    scale: torch.Tensor
    center: torch.Tensor
    flip: torch.Tensor
    sigma: torch.Tensor
    feather: torch.Tensor
    scale_range: torch.Tensor
    feasible: torch.Tensor

    def transform(self, row: int):
        """Row ``row`` as a :class:`core.labels.overlay.Transform` (its record is the compositor's)."""
        from core.labels.overlay import Transform

        cx, cy = (float(v) for v in self.center[row])
        return Transform(float(self.scale[row]), float(self.angle[row]), bool(self.flip[row] < 0), (cx, cy))


def constrain(raw: torch.Tensor, objects: Objects, flip: torch.Tensor, shape: tuple[int, int],
              params: CompositeParams, max_sigma) -> Constrained:  # fmt: skip
    """Squash raw synthesizer outputs into the compositor's placement limits (differentiably).

    Args:
        raw: ``B x 5`` (angle, scale, x, y, feather), any real values.
        objects: the pasted objects.
        flip: ``B`` of -1 (mirror left-right) or 1.
        shape: ``(H, W)`` of the target.
        params: the compositor's settings (``placement.max_rotate``, the scale range via :func:`share_range`,
            ``max_truncation``).
        max_sigma: largest feather (Gaussian sigma, target pixels): a float or ``B`` values (see
            :func:`feather_limit`).

    See the module docstring for the squashing; the guarantee holds over ``objects.points``.
    """
    import torch

    h, w = shape
    dev = raw.device
    size = torch.tensor([w, h], dtype=raw.dtype, device=dev)
    angle = params.placement.max_rotate * torch.tanh(raw[:, 0])
    theta = torch.deg2rad(angle)
    cos, sin = torch.cos(theta), torch.sin(theta)
    unit = torch.stack([torch.stack([cos * flip, sin], -1), torch.stack([-sin * flip, cos], -1)], -2)  # B x 2 x 2
    offsets = objects.points @ unit.transpose(1, 2)  # B x M x 2: unit @ p
    a = params.max_truncation / 4.0
    q = torch.quantile(offsets, torch.tensor([a, 1.0 - a], dtype=raw.dtype, device=dev), dim=1)  # 2 x B x 2
    q_lo, q_hi = q[0], q[1]
    extent = (q_hi - q_lo).clamp_min(1e-3)
    cap = (size / extent).min(1).values
    scale_range = torch.sqrt(objects.shares * (h * w) / objects.area[:, None])
    feasible = scale_range[:, 0] <= cap * (1 + 1e-6)
    top = torch.minimum(scale_range[:, 1], cap)
    bottom = torch.minimum(scale_range[:, 0], top)
    u = torch.sigmoid(raw[:, 1])
    scale = torch.exp(torch.log(bottom) + u * (torch.log(top) - torch.log(bottom)))
    lo = (-0.5 - scale[:, None] * q_lo).clamp_min(0.0)
    hi = torch.minimum(size - 0.5 - scale[:, None] * q_hi, size - 1.0)
    lo = torch.minimum(lo, hi)
    center = lo + torch.sigmoid(raw[:, 2:4]) * (hi - lo)
    feather = torch.sigmoid(raw[:, 4])
    sigma = max_sigma * feather
    lin = scale[:, None, None] * unit
    offset = center - (lin @ (objects.crop / 2.0)[:, :, None])[:, :, 0]
    matrix = torch.cat([lin, offset[:, :, None]], 2)
    return Constrained(matrix, angle, scale, center, flip, sigma, feather, scale_range, feasible)


# ---- differentiable pasting ----------------------------------------------------------------------------------


def feather_limit(params: CompositeParams, factor: float = 1.0) -> float:
    """The largest feather sigma in pixels: the compositor's ``blend_size`` (0 with ``blending="none"``) times
    ``factor`` (training: the training side over the sample's original shorter side)."""
    return 0.0 if params.blending == "none" else float(params.blend_size) * factor


def _grid_theta(matrix: torch.Tensor, crop: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``affine_grid`` thetas (``align_corners=False``) sampling the crop for each target pixel through the inverse
    of ``matrix`` (crop pixel -> target pixel, pixel centres at integer coordinates)."""
    import torch

    h, w = shape
    b = matrix.shape[0]
    dev, dt = matrix.device, matrix.dtype
    lin, off = matrix[:, :, :2], matrix[:, :, 2]
    det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
    inv = torch.stack([torch.stack([lin[:, 1, 1], -lin[:, 0, 1]], -1),
                       torch.stack([-lin[:, 1, 0], lin[:, 0, 0]], -1)], -2) / det[:, None, None]  # fmt: skip
    inv_off = -(inv @ off[:, :, None])[:, :, 0]
    bottom = torch.tensor([0.0, 0.0, 1.0], device=dev, dtype=dt).expand(b, 1, 3)
    inverse = torch.cat([torch.cat([inv, inv_off[:, :, None]], 2), bottom], 1)
    out = torch.tensor([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]], device=dev, dtype=dt)
    cw, ch = crop[:, 0], crop[:, 1]
    zero, one = torch.zeros_like(cw), torch.ones_like(cw)
    norm_in = torch.stack([torch.stack([2 / cw, zero, 1 / cw - 1], -1), torch.stack([zero, 2 / ch, 1 / ch - 1], -1),
                           torch.stack([zero, zero, one], -1)], -2)  # fmt: skip
    return (norm_in @ inverse @ out)[:, :2]


def feather_mask(mask: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """``B x 1 x H x W`` mask blurred by a Gaussian of per-row ``sigma`` (``B``, pixels; zeros outside), the
    kernel ``2 * radius + 1`` wide; differentiable in both."""
    import torch
    from torch.nn import functional as F

    if radius <= 0:
        return mask
    b, _, h, w = mask.shape
    x = torch.arange(-radius, radius + 1, device=mask.device, dtype=mask.dtype)
    k = torch.exp(-(x[None] ** 2) / (2 * sigma.clamp_min(0.2)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    out = F.conv2d(mask.reshape(1, b, h, w), k.view(b, 1, 1, -1), padding=(0, radius), groups=b)
    out = F.conv2d(out, k.view(b, 1, -1, 1), padding=(radius, 0), groups=b)
    return out.reshape(b, 1, h, w)


def paste(background: torch.Tensor, labels: torch.Tensor, objects: Objects, placed: Constrained,
          params: CompositeParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Paste one object per row, differentiably in the image.

    Args:
        background: ``B x 3 x H x W float32`` in ``[0, 1]``.
        labels: ``B x H x W int64`` background label maps (255 = ignore).
        objects, placed: the objects and their transforms.
        params: ``placement.protected`` / ``placement.layer`` limit the pixels painted, as in compositing.

    Returns:
        ``(image B x 3 x H x W float32, labels B x H x W int64, pasted B x H x W bool, mask B x H x W float32)``:
        the labels are the object's class where its bilinearly warped ``mask`` is over 0.5 (and the pixel may be
        painted), the background's label elsewhere; the image is blended with the feathered warped mask.
    """
    import torch
    from torch.nn import functional as F

    b, _, h, w = background.shape
    theta = _grid_theta(placed.matrix, objects.crop, (h, w))
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    obj = F.grid_sample(objects.canvas[:, :3], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mask = F.grid_sample(objects.canvas[:, 3:], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    placement = params.placement
    if placement.protected or placement.layer == "under":
        allowed = torch.ones_like(labels, dtype=torch.bool)
        if placement.protected:
            allowed &= ~torch.isin(labels, torch.tensor(placement.protected, device=labels.device))
        if placement.layer == "under":
            allowed &= labels == 0
        mask = mask * allowed[:, None].to(mask.dtype)
    pasted = mask[:, 0] > 0.5
    out_labels = torch.where(pasted, objects.classes[:, None, None], labels)
    radius = int(math.ceil(3 * float(placed.sigma.detach().max()))) if b else 0
    alpha = feather_mask(mask, placed.sigma, radius).clamp(0, 1)
    return alpha * obj + (1 - alpha) * background, out_labels, pasted, mask[:, 0]


# ---- the adversarial synthesizer ------------------------------------------------------------------------------


@dataclass
class HardSynthesizer:
    """A trained synthesizer and what it was trained with.

    Attributes:
        net: the ``Synthesizer`` (eval mode).
        settings, params: the hard-compositing settings and the compositor's (limits) it squashes into.
        input_size: the side its inputs are resized to.
        task: the task model after the alternating updates (a :class:`LoadedSegmenter`; not saved anywhere).
        discriminator: the realism discriminator, or ``None`` (loaded from a folder).
        seed, steps: of the training; ``log``: one dict per step: ``synth_soft_loss`` (the synthesizer's objective,
            :func:`soft_task_loss`, before its update), ``synth_task_loss`` (the task model's cross-entropy on the
            step's composites with their hard labels, before the update), ``adv_loss``, ``disc_loss`` and, on task
            updates, ``task_loss_real`` / ``task_loss_synth``.
    """

    net: object
    settings: HardSettings
    params: CompositeParams
    input_size: int
    task: LoadedSegmenter | None = None
    discriminator: object | None = None
    seed: int = 0
    steps: int = 0
    log: list[dict] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    trainer: object | None = field(default=None, repr=False)  # the training's batches and steps (tests, benchmarks)

    @property
    def device(self):
        return next(self.net.parameters()).device

    def weights_sha256(self) -> str:
        """A hash of the synthesizer's weights (for records)."""
        h = hashlib.sha256()
        for k, v in sorted(self.net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {"seed": self.seed, "steps": self.steps, "input_size": self.input_size,
                "realism": self.settings.realism, "keep_out": self.settings.keep_out,
                "spread": self.settings.spread,
                "weights_sha256": self.weights_sha256(),
                "task": _task_record(self.task) if self.task is not None else None}  # fmt: skip

    def raw(self, background: torch.Tensor, objects: Objects, z: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``B x 5``: the network's mean for ``B x 3 x H x W`` backgrounds (any side; resized to
        ``input_size``) and the objects, plus ``settings.spread * z`` (``z``: ``B x 5`` standard normal)."""
        import torch
        from torch.nn import functional as F

        r = self.input_size
        bg = background if background.shape[-1] == r and background.shape[-2] == r else \
            F.interpolate(background, size=(r, r), mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
        obj = objects.canvas if tuple(objects.canvas.shape[-2:]) == (r, r) else \
            F.interpolate(objects.canvas, size=(r, r), mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
        mean = self.net(bg, obj, objects.feats)
        return MEAN_BOUND * torch.tanh(mean / MEAN_BOUND) + self.settings.spread * z

    def save(self, folder: str | Path) -> Path:
        """Write ``synthesizer.safetensors`` and ``synthesizer.json`` (settings, limits, log) into ``folder``."""
        from safetensors.torch import save_file

        from core.io.atomic import atomic_write, atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        atomic_write(folder / SYNTH_FILE, lambda tmp: save_file(tensors, str(tmp)))
        doc = {"settings": self.settings.record(), "params": self.params.record(), "input_size": self.input_size,
               "seed": self.seed, "steps": self.steps, "classes": self.classes, "log": self.log,
               **self.describe()}  # fmt: skip
        atomic_write_text(folder / SYNTH_META, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return folder


def load_synthesizer(folder: str | Path, device: str = "auto") -> HardSynthesizer:
    """A synthesizer written by :meth:`HardSynthesizer.save` (without its discriminator and task model)."""
    from safetensors.torch import load_file

    from core.device import resolve_policy
    from core.generate.composite import CompositeParams
    from core.labels.overlay import Placement

    folder = Path(folder)
    if not (folder / SYNTH_META).is_file() or not (folder / SYNTH_FILE).is_file():
        raise InvalidInput(f"{folder} holds no synthesizer ({SYNTH_META} and {SYNTH_FILE} expected)")
    doc = json.loads((folder / SYNTH_META).read_text(encoding="utf-8"))
    settings = HardSettings(**doc["settings"])
    p = dict(doc["params"])
    placement = Placement(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.pop("placement").items()})
    params = CompositeParams(placement=placement, **{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
    net = network_classes()["Synthesizer"](settings.width)
    net.load_state_dict(load_file(str(folder / SYNTH_FILE), device="cpu"))
    net = net.to(resolve_policy(device).device).eval()
    return HardSynthesizer(net, settings, params, int(doc["input_size"]), None, None, int(doc["seed"]),
                           int(doc["steps"]), list(doc.get("log", [])), list(doc.get("classes", [])))  # fmt: skip


def _wanted_objects(library: RegionLibrary, request: CompositeRequest) -> tuple[list, tuple[int, ...], object]:
    """``(object regions, stuff classes, observed sizes or None)`` as the compositor picks them."""
    from core.generate.composite import _wanted_classes

    stuff = library.stuff() if request.stuff is None else tuple(sorted(library.store.classes.index_of(n)
                                                                        for n in request.stuff))  # fmt: skip
    wanted = _wanted_classes(library, request, stuff)
    objects = [r for c in wanted for r in library.components(c)]
    sizes = library.sizes(exclude=stuff) if request.params.placement.uses_data else None
    if sizes is not None and not len(sizes):
        raise InvalidInput(
            f"{library.store.root} has no object of at least {library.min_area} px to measure sizes from"
        )
    return objects, stuff, sizes


def _task_loss(net, image, labels):
    from torch.nn import functional as F

    counted = (labels != IGNORE).sum().clamp_min(1)
    return F.cross_entropy(net(image).float(), labels, ignore_index=IGNORE, reduction="sum") / counted


def soft_task_loss(net, image, labels, mask, classes) -> torch.Tensor:
    """The task loss the synthesizer maximises: cross-entropy against the *soft* composite target, each pixel the
    pasted class with weight ``mask`` and the background's label with weight ``1 - mask`` (255: no weight), summed
    over pixels and divided by the (constant) labelled-pixel count of the hard map. Differentiable in the image and
    in the warped mask, so the gradient reaches the transform through where the labels go, not only through the
    pixels (with hard labels, moving an object shows up only as image-label misalignment).

    Args:
        image: ``B x 3 x H x W`` in ``[0, 1]``; labels: ``B x H x W int64`` background maps; mask: ``B x H x W``
            warped object masks in ``[0, 1]``; classes: ``B int64`` pasted classes.
    """
    import torch
    from torch.nn import functional as F

    logp = F.log_softmax(net(image).float(), 1)
    b, c, h, w = logp.shape
    valid = labels != IGNORE
    lp_obj = logp.gather(1, classes.view(b, 1, 1, 1).expand(b, 1, h, w))[:, 0]
    lp_bg = logp.gather(1, torch.where(valid, labels, torch.zeros_like(labels))[:, None])[:, 0]
    hard = (mask > 0.5) | valid
    per_pixel = -(mask * lp_obj + (1 - mask) * valid.to(mask.dtype) * lp_bg)
    return per_pixel.sum() / hard.sum().clamp_min(1).to(per_pixel.dtype)


def _frozen(*nets):
    """Context: the nets' parameters need no gradient inside."""
    import contextlib

    @contextlib.contextmanager
    def manager():
        before = [[p.requires_grad for p in n.parameters()] for n in nets]
        for n in nets:
            for p in n.parameters():
                p.requires_grad_(False)
        try:
            yield
        finally:
            for n, flags in zip(nets, before, strict=True):
                for p, f in zip(n.parameters(), flags, strict=True):
                    p.requires_grad_(f)

    return manager()


@dataclass
class TrainingBatch:
    """One step's inputs (see :meth:`_Trainer.batch`): backgrounds, their labels, objects, flips, noise, and a
    real batch for the discriminator and the task model."""

    background: torch.Tensor
    labels: torch.Tensor
    objects: Objects
    flip: torch.Tensor
    z: torch.Tensor
    real: torch.Tensor
    real_labels: torch.Tensor
    max_sigma: torch.Tensor | None = None
    object_ids: torch.Tensor | None = None
    object_areas: torch.Tensor | None = None


def background_object_ids(label_maps: np.ndarray, stuff, ignore_index: int = IGNORE) -> tuple[np.ndarray, np.ndarray]:
    """The background objects of training maps (:func:`core.labels.placement.background_objects`: connected
    components of every thing class) as ``N x H x W int64`` numbers (0: not an object) and ``N x (K + 1) float32``
    pixel counts (``K`` the most objects of any map; column 0 and unused columns are 1)."""
    from core.labels.placement import background_objects

    n, h, w = label_maps.shape
    ids = np.zeros((n, h, w), np.int64)
    found = [background_objects(lm, set(stuff), 0.0, ignore_index) for lm in label_maps]
    k = max([len(f.areas) for f in found if f is not None], default=1)
    areas = np.ones((n, k), np.float32)
    for i, f in enumerate(found):
        if f is not None:
            x0, y0, x1, y1 = f.box
            ids[i, y0:y1, x0:x1] = f.ids
            areas[i, 1 : len(f.areas)] = np.maximum(f.areas[1:], 1)
    return ids, areas


def hidden_excess(mask: torch.Tensor, ids: torch.Tensor, areas: torch.Tensor, limit: float) -> torch.Tensor:
    """Per row, the summed excess over ``limit`` of the shares of the background's objects hidden by ``mask``
    (``B x H x W`` in ``[0, 1]``; ``ids``, ``areas`` from :func:`background_object_ids`); differentiable in the
    mask. The synthesizer pays for it, so it learns to stay within ``background_overlap`` (placements beyond it are
    refused when composites are made, as the compositor refuses them)."""
    import torch

    b, k = areas.shape
    hidden = torch.zeros(b, k, dtype=mask.dtype, device=mask.device)
    hidden = hidden.scatter_add(1, ids.view(b, -1), mask.reshape(b, -1))
    share = hidden[:, 1:] / areas[:, 1:]
    return torch.relu(share - limit).sum(1)


class _Trainer:
    """The data and networks of one adversarial training."""

    def __init__(self, store, task: LoadedSegmenter, settings: HardSettings, request: CompositeRequest, seed: int,
                 ids: Sequence[str] | None, progress=None, cancel=None):  # fmt: skip
        import copy

        import torch

        from core.task.data import load_samples
        from core.task.evaluate import LoadedSegmenter

        _check_classes(task, store)
        self.settings, self.request, self.params, self.seed = settings, request, request.params, int(seed)
        self.device = torch.device(task.device)
        self.size = task.size
        self.input_size = min(settings.input_size, task.size)
        library = _library(store, request, ids)
        regions, stuff, sizes = _wanted_objects(library, request)
        self.regions = regions
        pool = sorted(library.present)
        self.data = load_samples(store, pool, self.size, progress=progress, cancel=cancel)  # backgrounds, real
        if not len(self.data):
            raise InvalidInput(f"none of the labelled samples of {store.root} could be read")
        ranges = [share_range(r, self.params, sizes) for r in regions]
        self.objects = Objects.build(regions, ranges, self.size, TRAIN_POINTS, self.device)
        self.images = torch.from_numpy(self.data.images).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        self.label_maps = torch.from_numpy(self.data.label_maps.astype(np.int64)).to(self.device)
        factors = [self.size / min(store.image_hw(i)) for i in self.data.ids]  # the feather limit at the training side
        self.max_sigma = torch.tensor([feather_limit(self.params, f) for f in factors], device=self.device)
        self.object_ids = self.object_areas = None
        if self.params.background_overlap < 1:
            ids, areas = background_object_ids(self.data.label_maps, stuff, store.classes.ignore_index)
            self.object_ids = torch.from_numpy(ids).to(self.device)
            self.object_areas = torch.from_numpy(areas).to(self.device)
        classes = network_classes()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.synth = classes["Synthesizer"](settings.width).to(self.device)
            self.disc = classes["Discriminator"](settings.width).to(self.device)
        task_net = copy.deepcopy(task.net).to(self.device)
        self.task = LoadedSegmenter(task_net, task.classes, task.size, task.step, task.which, task.device,
                                    task.run_dir, task.val_miou, "fine-tuned by the adversarial compositing "
                                    "training (not saved)")  # fmt: skip
        self.opt_s = torch.optim.Adam(self.synth.parameters(), lr=settings.synth_lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=settings.disc_lr, betas=(0.5, 0.999))
        self.opt_t = torch.optim.Adam(task_net.parameters(), lr=settings.task_lr)
        self.hs = HardSynthesizer(self.synth, settings, self.params, self.input_size, self.task, self.disc,
                                  self.seed, 0, [], list(store.classes.names))  # fmt: skip

    def batch(self, step: int) -> TrainingBatch:
        """Step ``step``'s batch, drawn from ``numpy.random.default_rng([seed, step])`` only."""
        import torch

        rng = np.random.default_rng([self.seed, step])
        b, n = self.settings.batch, len(self.data)
        bg = rng.integers(n, size=b)
        obj = rng.integers(len(self.regions), size=b)
        flips = np.where(self.params.placement.flip & (rng.random(b) < 0.5), -1.0, 1.0)
        z = rng.standard_normal((b, RAW_OUTPUTS))
        real = rng.integers(n, size=b)
        dev = self.device
        t = torch.as_tensor
        ids = areas = None
        if self.object_ids is not None:
            ids, areas = self.object_ids[t(bg)], self.object_areas[t(bg)]
        return TrainingBatch(self.images[t(bg)], self.label_maps[t(bg)], self.objects.take(t(obj).to(dev)),
                             t(flips, dtype=torch.float32, device=dev), t(z, dtype=torch.float32, device=dev),
                             self.images[t(real)], self.label_maps[t(real)], self.max_sigma[t(bg)], ids,
                             areas)  # fmt: skip

    def composite(self, batch: TrainingBatch):
        """``(image, labels, mask, constrained, raw)`` of the synthesizer's composites for a batch (with gradients)."""
        raw = self.hs.raw(batch.background, batch.objects, batch.z)
        placed = constrain(raw, batch.objects, batch.flip, (self.size, self.size), self.params,
                           batch.max_sigma)  # fmt: skip
        image, labels, _, mask = paste(batch.background, batch.labels, batch.objects, placed, self.params)
        return image, labels, mask, placed, raw

    def synth_task_loss(self, batch: TrainingBatch, soft: bool = False) -> float:
        """The task model's loss on the synthesizer's composites of ``batch`` (hard labels, or the soft target the
        synthesizer maximises; no update)."""
        import torch

        with torch.no_grad():
            image, labels, mask, _, _ = self.composite(batch)
            if soft:
                return float(soft_task_loss(self.task.net, image, batch.labels, mask, batch.objects.classes))
            return float(_task_loss(self.task.net, image, labels))

    def step(self, step: int) -> dict:
        import torch
        from torch.nn import functional as F

        s = self.settings
        batch = self.batch(step)
        task_net = self.task.net
        r = self.input_size

        def small(x):
            return x if x.shape[-1] == r else F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False,
                                                            antialias=True)  # fmt: skip

        # 1. synthesizer: maximise the task loss, stay realistic
        self.synth.train()
        task_net.eval()
        with _frozen(task_net, self.disc):
            image, labels, mask, _, _ = self.composite(batch)
            task_loss = soft_task_loss(task_net, image, batch.labels, mask, batch.objects.classes)
            adv = F.softplus(-self.disc(small(image))).mean()
            loss = -task_loss + s.realism * adv
            excess = torch.zeros((), device=image.device)
            if batch.object_ids is not None:
                limit = KEEP_OUT_MARGIN * self.params.background_overlap
                excess = hidden_excess(mask, batch.object_ids, batch.object_areas, limit).mean()
                loss = loss + s.keep_out * excess
            self.opt_s.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_s.step()
        fake, fake_labels = image.detach(), labels
        # 2. discriminator: real vs composite
        d_loss = F.softplus(-self.disc(small(batch.real))).mean() + F.softplus(self.disc(small(fake))).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        with torch.no_grad():
            hard_loss = _task_loss(task_net, fake, fake_labels)
        record = {"step": step + 1, "synth_soft_loss": float(task_loss.detach()), "synth_task_loss": float(hard_loss),
                  "adv_loss": float(adv.detach()), "disc_loss": float(d_loss.detach()),
                  "hidden_excess": float(excess.detach())}  # fmt: skip
        # 3. task model: real + composites
        if s.task_every and (step + 1) % s.task_every == 0:
            task_net.train()
            real_loss = _task_loss(task_net, batch.real, batch.real_labels)
            synth_loss = _task_loss(task_net, fake, fake_labels)
            self.opt_t.zero_grad(set_to_none=True)
            (real_loss + synth_loss).backward()
            self.opt_t.step()
            task_net.eval()
            record.update(task_loss_real=float(real_loss.detach()), task_loss_synth=float(synth_loss.detach()))
        self.synth.eval()
        return record


def train_hard_synthesizer(data, task, settings: HardSettings | None = None, request: CompositeRequest | None = None,
                           seed: int = 0, *, ids: Sequence[str] | None = None, cache_dir: Path | None = None,
                           progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> HardSynthesizer:  # fmt: skip
    """Train the adversarial synthesizer against a task model (see the module docstring).

    Args:
        data: a dataset folder or :class:`core.store.DatasetStore` (backgrounds: its labelled samples, at the task
            model's side; objects: the compositor's regions of the request's classes).
        task: a segmenter run folder (its best checkpoint) or a :class:`LoadedSegmenter`; its network is copied,
            updated every ``settings.task_every`` steps, and returned in ``.task``.
        settings: steps, batch, learning rates, ``realism`` (lambda), ...
        request: the compositor's request: classes, ``min_area``, stuff and ``params`` (the limits).
        seed: of the initialisation (``torch.manual_seed``) and of every step's draws (``[seed, step]``).
        ids: limit backgrounds and object sources to these samples (e.g. a training split).

    Raises:
        InvalidInput: the task model's classes differ from the data's; nothing to paste.
        Cancelled: ``cancel`` was set (between steps).
    """
    from core.generate.composite import CompositeRequest
    from core.task.data import open_store

    settings = settings or HardSettings(mode="adversarial")
    request = request or CompositeRequest()
    store = open_store(data, cache_dir) if isinstance(data, str | Path) else data
    model = as_task_model(task)
    report = progress or no_progress
    trainer = _Trainer(store, model, settings, request, seed, ids, progress=progress, cancel=cancel)
    hs = trainer.hs
    for step in range(settings.steps):
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"hard-composite training was cancelled at step {step}")
        record = trainer.step(step)
        if not all(math.isfinite(v) for v in record.values()):
            raise InvalidInput(f"hard-composite training diverged at step {step + 1} ({record}); lower the learning "
                               "rates")  # fmt: skip
        hs.log.append({k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()})
        hs.steps = step + 1
        report((step + 1) / settings.steps, f"synthesizer step {step + 1}/{settings.steps}, task loss on composites "
                                            f"{record['synth_task_loss']:.4f}")  # fmt: skip
    hs.net.eval()
    hs.task.net.eval()
    hs.trainer = trainer
    return hs


# ---- adversarial composites at full resolution ---------------------------------------------------------------


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``1 x 3 x H x W`` in ``[0, 1]`` -> ``H x W x 3 uint8``."""
    return np.clip(np.rint(image[0].permute(1, 2, 0).cpu().numpy() * 255.0), 0, 255).astype(np.uint8)


def adversarial_composite(library: RegionLibrary, request: CompositeRequest, index: int, synth: HardSynthesizer,
                          seed_sequence: list[int] | None = None) -> RecombinedSample:  # fmt: skip
    """Result ``index``: ``params.objects`` objects placed by the synthesizer on a background drawn as the compositor
    draws it, at the background's own resolution.

    Each object is drawn, then its placement proposed with fresh noise up to ``params.attempts`` times until it is
    feasible and within the truncation (the compositor's rule: ``1 - visible / (area * scale**2)``), overlap and
    background-object limits; then pasted (later objects occlude earlier ones). The record is the compositor's
    (``steps`` with ``region``, ``transform``, ``pixels``, ``blending``) plus ``blend_sigma`` / ``feather`` per object
    and ``synthesizer``.

    Raises:
        SampleProblem: no object fitted on :data:`core.generate.composite.BACKGROUND_TRIES` backgrounds.
    """
    import torch

    from core.generate.composite import (
        BACKGROUND_TRIES,
        LABELLED_RULE,
        UNLABELLED_RULE,
        _draw_background,
        _known_objects,
        background_pool,
    )
    from core.labels.overlay import Recombined
    from core.labels.recombine import RecombinedSample

    params, classes = request.params, library.store.classes
    objects, stuff, sizes = _wanted_objects(library, request)
    seeds = list(seed_sequence) if seed_sequence is not None else [request.seed, index]
    rng = np.random.default_rng(seeds)
    pool = background_pool(library, request)
    dev = synth.device
    for _ in range(BACKGROUND_TRIES):
        background_id, background, labels = _draw_background(library, pool, rng, request.background_pool != "all")
        h, w = background.shape[:2]
        label_map = np.full((h, w), classes.ignore_index, np.uint8) if labels is None else labels.copy()
        known = _known_objects(library, background_id, labels, stuff, params.background_overlap)
        hidden = known.fresh(params.background_overlap) if known is not None else None
        image_t = torch.from_numpy(np.ascontiguousarray(background)).to(dev).permute(2, 0, 1)[None].float() / 255.0
        labels_t = torch.from_numpy(label_map.astype(np.int64)).to(dev)[None]
        taken = np.zeros((h, w), bool)
        steps: list[dict] = []
        candidates = [o for o in objects if o.source_id != background_id] or objects
        for _ in range(int(rng.integers(params.objects[0], params.objects[1] + 1))):
            region = candidates[int(rng.integers(len(candidates)))]
            obj = Objects.build([region], [share_range(region, params, sizes)], None, FULL_POINTS, dev)
            placed_step = None
            for attempt in range(params.attempts):
                flip = -1.0 if params.placement.flip and rng.random() < 0.5 else 1.0
                z = rng.standard_normal((1, RAW_OUTPUTS))
                with torch.no_grad():
                    raw = synth.raw(image_t, obj, torch.as_tensor(z, dtype=torch.float32, device=dev))
                    placed = constrain(raw, obj, torch.tensor([flip], device=dev), (h, w), params,
                                       feather_limit(params))  # fmt: skip
                    if not bool(placed.feasible[0]):
                        continue
                    new_image, new_labels, pasted_t, _ = paste(image_t, labels_t, obj, placed, params)
                pasted = pasted_t[0].cpu().numpy()
                visible = int(pasted.sum())
                expected = region.area * float(placed.scale[0]) ** 2
                if visible == 0 or 1 - visible / expected > params.max_truncation:
                    continue
                if (pasted & taken).sum() / visible > params.max_overlap:
                    continue
                hides = None
                if hidden is not None:
                    hides = hidden.would_hide((0, 0, w, h), pasted & ~taken)
                    if hides is None:
                        continue
                placed_step = (placed, new_image, new_labels, pasted, hides, attempt, z)
                break
            if placed_step is None:
                steps.append({"region": region.record(), "skipped": "no placement within the truncation and "
                                                                    "overlap limits"})  # fmt: skip
                continue
            placed, image_t, labels_t, pasted, hides, attempt, z = placed_step
            taken |= pasted
            step = {"region": region.record(), "transform": placed.transform(0).record(), "pixels": int(pasted.sum()),
                    "blending": "gaussian", "blend_sigma": round(float(placed.sigma[0]), 4),
                    "feather": round(float(placed.feather[0]), 6), "attempt": attempt, "placed_by": "synthesizer"}  # fmt: skip
            if hides is not None:
                hidden.hidden += hides
                step["background_hidden"] = int(hides.sum())
            steps.append(step)
        if any("skipped" not in s for s in steps):
            break
    else:
        raise SampleProblem(f"adversarial composite {index}: no object fitted on {BACKGROUND_TRIES} backgrounds within "
                            "the truncation and overlap limits")  # fmt: skip
    out_labels = labels_t[0].cpu().numpy().astype(np.uint8)
    result = Recombined(out_labels, _to_uint8(image_t), steps)
    present = sorted(set(np.unique(out_labels).tolist()) - {classes.ignore_index})
    record = {"id": f"adversarial_{index:06d}", "mode": "composite-adversarial", "seed": request.seed, "index": index,
              "seed_sequence": seeds, "stuff": [classes.names[c] for c in stuff], "background": background_id,
              "params": params.record(), "steps": steps,
              "labels": LABELLED_RULE if labels is not None else UNLABELLED_RULE,
              "classes": [classes.names[c] for c in present],
              "hard": {"kind": "adversarial", "synthesizer": synth.describe()}}  # fmt: skip
    return RecombinedSample(record["id"], result, record)


def make_hard_composites(dataset, n: int, seed: int = 0, *, mode: str = "mined", task=None,
                         synthesizer: HardSynthesizer | None = None, request: CompositeRequest | None = None,
                         settings: HardSettings | None = None, ids: Sequence[str] | None = None,
                         cache_dir: Path | None = None, skipped=None, progress: ProgressFn | None = None,
                         cancel: CancelToken | None = None) -> list[RecombinedSample]:  # fmt: skip
    """``n`` hard composites (results ``0 .. n-1``; one that fits nowhere is skipped and reported).

    Args:
        dataset: a dataset folder or :class:`core.store.DatasetStore`.
        n: results wanted.
        seed: base seed (``request.seed`` is replaced by it): mined candidate ``k`` of result ``i`` uses
            ``[seed, i, k]``, adversarial result ``i`` ``[seed, i]``.
        mode: ``mined`` (needs ``task``) or ``adversarial`` (needs ``synthesizer``, or ``task`` to train one
            with ``settings`` first).
        task: a segmenter run folder or :class:`LoadedSegmenter`.
        request: the compositor's request (classes, limits, backgrounds...); its ``count`` is ignored.
        ids: limit backgrounds and object sources to these samples.
        skipped: a :class:`core.store.SkipReport` collecting skipped results and unreadable samples.

    Returns:
        :class:`core.labels.recombine.RecombinedSample` items (``result.image`` ``H x W x 3 uint8``,
        ``result.label_map`` ``H x W uint8``, ``record``), ready for :func:`core.labels.recombine.write_samples`.
    """
    from dataclasses import replace

    from core.generate.composite import CompositeRequest
    from core.labels.recombine import made_or_skipped
    from core.task.data import open_store

    if mode not in MODES:
        raise InvalidInput(f"mode {mode!r} is unknown; accepted: {', '.join(MODES)}")
    if not 1 <= n <= 1_000_000:
        raise InvalidInput(f"n must be 1..1000000, got {n}")
    settings = settings or HardSettings(mode=mode)
    request = replace(request or CompositeRequest(), seed=int(seed), count=n)
    store = open_store(dataset, cache_dir) if isinstance(dataset, str | Path) else dataset
    library = _library(store, request, ids)
    if skipped is not None:
        library.skipped = skipped
    if mode == "mined":
        if task is None:
            raise InvalidInput("mined hard composites need a task model (a segmenter run folder)")
        model = as_task_model(task)
        _check_classes(model, store)
        make, args = mine_composite, (model, settings.candidates, settings.metric)
        prefix = "mined"
    else:
        if synthesizer is None:
            if task is None:
                raise InvalidInput("adversarial hard composites need a trained synthesizer or a task model to train "
                                   "one against")  # fmt: skip
            synthesizer = train_hard_synthesizer(store, task, settings, request, seed, ids=ids, progress=progress,
                                                 cancel=cancel)  # fmt: skip
        if synthesizer.classes and list(synthesizer.classes) != list(store.classes.names):
            raise InvalidInput(f"the synthesizer was trained on classes {synthesizer.classes}, {store.root} has "
                               f"{list(store.classes.names)}")  # fmt: skip
        make, args = adversarial_composite, (synthesizer,)
        prefix = "adversarial"
    made = [made_or_skipped(library, f"{prefix}_{i:06d}", make, request, i, *args)
            for i in track(range(n), progress=progress, cancel=cancel, message=f"{prefix} composites")]  # fmt: skip
    return [m for m in made if m is not None]


# ---- writing a synthetic source ---------------------------------------------------------------------------------


@dataclass
class HardWriteResult:
    """What :func:`write_hard_composites` wrote: the manifest, how many samples, the task run used (trained here
    when none was given), the synthesizer folder (adversarial) and the skipped results."""

    manifest: Path
    written: int
    task_run: Path
    synthesizer: Path | None = None
    skipped: list = field(default_factory=list)
    log: list[dict] = field(default_factory=list)


def default_task_config(data_root, size: int = 64, steps: int = 300, seed: int = 0):
    """The small task model trained when none is given: a U-Net (width 16, depth 3) on every labelled sample
    (split ``1, 0, 0``: no validation), flip augmentation, ``steps`` steps at ``size``."""
    from core.task.trainer import SegmenterConfig

    return SegmenterConfig(data=str(data_root), split=(1.0, 0.0, 0.0), size=size, steps=steps, batch=8, lr=1e-3,
                           seed=seed, width=16, depth=3, standard_aug="flip", val_every=0,
                           checkpoint_every=max(1, steps), log_every=10)  # fmt: skip


def write_hard_composites(data_root, out_dir, n: int, seed: int = 0, mode: str = "mined", task_run=None, *,
                          request: CompositeRequest | None = None, settings: HardSettings | None = None,
                          task_config=None, ids: Sequence[str] | None = None, cache_dir: Path | None = None,
                          progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> HardWriteResult:  # fmt: skip
    """Write ``n`` hard composites as a VOC-layout folder with ``manifest.jsonl`` (one record per line), with the
    writer of ``segstudio generate --backend composite`` (:func:`core.labels.recombine.write_samples`).

    Args:
        data_root: the real dataset folder.
        out_dir: an empty (or new) folder; the folder becomes a synthetic source for ``train-segmenter
            --synthetic`` / the experiment.
        mode: ``mined`` or ``adversarial`` (the synthesizer is saved to ``out_dir/hard_synthesizer``).
        task_run: a segmenter run folder; ``None`` trains one first into ``out_dir/task_run`` with ``task_config``
            (default :func:`default_task_config`; an interrupted one is resumed).
        ids: limit backgrounds and object sources to these samples (pass an experiment's training ids, with a
            task run trained on them, so no val / test sample leaks into the composites).

    Raises:
        InvalidInput: ``out_dir`` already holds a manifest (checked before any training), bad settings.
    """
    from core.labels.recombine import write_samples
    from core.store import SkipReport
    from core.task.data import open_store
    from core.task.trainer import train_segmenter

    settings = settings or HardSettings(mode=mode)
    if mode not in MODES:
        raise InvalidInput(f"mode {mode!r} is unknown; accepted: {', '.join(MODES)}")
    out = Path(out_dir)
    if (out / "manifest.jsonl").is_file():
        raise InvalidInput(f"{out} already holds a manifest; choose an empty folder (nothing was overwritten)")
    store = open_store(data_root, cache_dir)
    if task_run is None:
        task_run = out / "task_run"
        config = task_config or default_task_config(store.root, seed=seed)
        train_segmenter(config, task_run, progress=progress, cancel=cancel, resume=True,
                        cache_dir=None if cache_dir is None else Path(cache_dir))  # fmt: skip
    skipped = SkipReport()
    model = as_task_model(task_run)
    synth, folder = None, None
    if mode == "adversarial":
        synth = train_hard_synthesizer(store, model, settings, request, seed, ids=ids, progress=progress, cancel=cancel)
        folder = synth.save(out / "hard_synthesizer")
    samples = make_hard_composites(store, n, seed, mode=mode, task=model, synthesizer=synth, request=request,
                                   settings=settings, ids=ids, skipped=skipped, progress=progress, cancel=cancel)  # fmt: skip
    manifest = write_samples(out, store.classes, samples)
    return HardWriteResult(manifest, len(samples), Path(task_run), folder,
                           [(p.sample_id or p.path, p.reason) for p in skipped.skipped],
                           synth.log if synth is not None else [])  # fmt: skip
