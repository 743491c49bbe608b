"""Pasting regions onto label maps (overlay) and building new maps (reconstruction), images alongside.

Label maps and masks are transformed with nearest-neighbour sampling only, so an output never holds a
label value its inputs did not (255 aside, used for the optional ignore border). Images follow the
same geometric transform (bilinear), so every recombined map also has a cut-and-paste image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from core.errors import InvalidInput, require_all
from core.labels.regions import Region
from core.types import IGNORE_INDEX

LAYERS = ("top", "under")
PLACEMENTS = ("keep", "random")
SIZES = ("relative", "data")
POSITIONS = ("around", "uniform", "data")


@dataclass(frozen=True)
class Placement:
    """Where and how a region is pasted.

    Attributes:
        mode: ``keep`` (same relative position and size as in its source) or ``random`` (within the
            limits below).
        max_translate: largest shift as a fraction of the target's width / height (``position="around"``).
        scale: ``(min, max)`` scale factor, relative to the kept size (``size="relative"`` only).
        max_rotate: largest rotation in degrees (either way).
        flip: allow horizontal flips (half of the time).
        protected: class indices that pasted pixels never cover.
        layer: ``top`` pastes over everything not protected; ``under`` only over background (class 0).
        ignore_border: width in pixels of an ignore (255) ring laid around the pasted pixels; 0 for none.
        size: ``relative`` (the kept size times ``scale``: an object that filled its source fills its
            target) or ``data`` (the area share of an object of the same class observed in the dataset,
            drawn from :class:`core.labels.sizes.ObjectSizes`).
        min_area_share, max_area_share: narrow the drawn area share (pixels over the target's pixels);
            ``size="data"`` only.
        max_stretch: how far the region's aspect may be stretched towards the drawn object's aspect (a
            factor; 1 keeps the region's own aspect); ``size="data"`` only.
        position: ``around`` (the kept position shifted by up to ``max_translate``), ``uniform`` (anywhere
            in the target) or ``data`` (near the centre of the drawn observed object, e.g. cars low in street
            scenes).
        ground_plane: tie the size to the vertical position (a flat ground seen from eye level): an object
            placed lower than where the drawn size was observed is drawn larger, higher is smaller, and
            object centres are kept below ``horizon``.
        horizon: the horizon's height as a share of the target's height (``ground_plane`` only).
    """

    mode: str = "random"
    max_translate: float = 0.25
    scale: tuple[float, float] = (0.8, 1.2)
    max_rotate: float = 10.0
    flip: bool = True
    protected: tuple[int, ...] = ()
    layer: str = "top"
    ignore_border: int = 0
    size: str = "relative"
    min_area_share: float = 0.0
    max_area_share: float = 1.0
    max_stretch: float = 1.0
    position: str = "around"
    ground_plane: bool = False
    horizon: float = 0.4

    def __post_init__(self) -> None:
        checks = [
            (self.mode in PLACEMENTS, f"placement mode must be one of {', '.join(PLACEMENTS)}, got {self.mode!r}"),
            (0 <= self.max_translate <= 1, f"max_translate must be 0..1 (a fraction of the map), got {self.max_translate}"),
            (0 < self.scale[0] <= self.scale[1] <= 10, f"scale must be (min, max) with 0 < min <= max <= 10, got {self.scale}"),
            (0 <= self.max_rotate <= 180, f"max_rotate must be 0..180 degrees, got {self.max_rotate}"),
            (self.layer in LAYERS, f"layer must be one of {', '.join(LAYERS)}, got {self.layer!r}"),
            (0 <= self.ignore_border <= 50, f"ignore_border must be 0..50 pixels, got {self.ignore_border}"),
            (self.size in SIZES, f"size must be one of {', '.join(SIZES)}, got {self.size!r}"),
            (0 <= self.min_area_share <= self.max_area_share <= 1,
             f"area shares must satisfy 0 <= min <= max <= 1, got min {self.min_area_share}, max {self.max_area_share}"),
            (1 <= self.max_stretch <= 3, f"max_stretch must be 1..3 (1 keeps the aspect), got {self.max_stretch}"),
            (self.position in POSITIONS, f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}"),
            (0 <= self.horizon < 0.95, f"horizon must be 0..0.95 (a share of the height from the top), got {self.horizon}"),
        ]  # fmt: skip
        require_all(checks, "placement")
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "protected", tuple(sorted({int(v) for v in self.protected})))

    def record(self) -> dict:
        return asdict(self)

    @property
    def uses_data(self) -> bool:
        """Whether placements draw from the dataset's observed objects (sizes or positions)."""
        return self.mode == "random" and (self.size == "data" or self.position == "data")


@dataclass(frozen=True)
class Transform:
    """The similarity transform that maps a region's crop into a target map.

    Attributes:
        scale, angle: size factor and rotation (degrees, counter-clockwise) about the crop centre.
        flip: mirrored left-right before rotating.
        center: ``(x, y)`` of the crop centre in the target, in pixels.
        stretch: width over height factor applied before rotating (area kept: x by ``sqrt(stretch)``, y by
            ``1 / sqrt(stretch)``); 1 for a similarity transform.
    """

    scale: float
    angle: float
    flip: bool
    center: tuple[float, float]
    stretch: float = 1.0

    def matrix(self, crop_w: int, crop_h: int) -> np.ndarray:
        """``2 x 3`` affine matrix from crop pixel coordinates to target coordinates."""
        cx, cy = crop_w / 2.0, crop_h / 2.0
        theta = math.radians(self.angle)
        cos, sin = math.cos(theta) * self.scale, math.sin(theta) * self.scale
        flip = -1.0 if self.flip else 1.0
        # x' = R S F (x - c) + centre
        a = np.array([[cos * flip, sin], [-sin * flip, cos]])
        if self.stretch != 1.0:
            a = a * np.array([math.sqrt(self.stretch), 1.0 / math.sqrt(self.stretch)])
        offset = np.array(self.center) - a @ np.array([cx, cy])
        return np.hstack([a, offset[:, None]])

    def record(self) -> dict:
        out = {"scale": round(self.scale, 6), "angle": round(self.angle, 4), "flip": self.flip,
               "center": [round(self.center[0], 3), round(self.center[1], 3)]}  # fmt: skip
        if self.stretch != 1.0:
            out["stretch"] = round(self.stretch, 6)
        return out


def sample_transform(
    region: Region, target_shape: tuple[int, int], placement: Placement, rng: np.random.Generator, sizes=None
) -> Transform:
    """Draw a transform for pasting ``region`` into a ``target_shape`` map under ``placement``.

    Args:
        sizes: observed objects (:class:`core.labels.sizes.ObjectSizes`) to draw sizes / positions from when
            ``placement.size`` or ``placement.position`` is ``data``; default: measured from ``region`` alone.
    """
    th, tw = target_shape
    sh, sw = region.source_shape
    ratio = math.sqrt((th * tw) / max(1, sh * sw))
    x0, y0, x1, y1 = region.bbox
    kept_center = ((x0 + x1) / 2 * tw / sw, (y0 + y1) / 2 * th / sh)
    if placement.mode == "keep":
        return Transform(ratio, 0.0, False, kept_center)
    if placement.uses_data or placement.position == "uniform" or placement.ground_plane:
        return _plausible_transform(region, target_shape, placement, rng, sizes, ratio, kept_center)
    scale = ratio * float(rng.uniform(*placement.scale))
    angle = float(rng.uniform(-placement.max_rotate, placement.max_rotate))
    flip = bool(placement.flip and rng.random() < 0.5)
    dx = float(rng.uniform(-placement.max_translate, placement.max_translate)) * tw
    dy = float(rng.uniform(-placement.max_translate, placement.max_translate)) * th
    center = (min(max(kept_center[0] + dx, 0.0), tw - 1.0), min(max(kept_center[1] + dy, 0.0), th - 1.0))
    return Transform(scale, angle, flip, center)


def _plausible_transform(region, target_shape, placement: Placement, rng, sizes, ratio, kept_center) -> Transform:
    """A transform whose size (and position) come from observed objects, optionally on a ground plane."""
    th, tw = target_shape
    shares = (placement.min_area_share, placement.max_area_share)
    row = None
    if placement.uses_data:
        if sizes is None:
            from core.labels.sizes import ObjectSizes

            sizes = ObjectSizes.from_regions([region])
        row = sizes.draw(region.class_index, rng, shares if placement.size == "data" else (0.0, 1.0))
    angle = float(rng.uniform(-placement.max_rotate, placement.max_rotate))
    flip = bool(placement.flip and rng.random() < 0.5)
    stretch, ref_y = 1.0, kept_center[1] / th
    if placement.size == "data":
        share = sizes.draw_share(row, rng, shares)
        scale = math.sqrt(share * th * tw / max(1, region.area))
        if placement.max_stretch > 1:
            x0, y0, x1, y1 = region.bbox
            wanted = float(sizes.aspect[row]) / ((x1 - x0) / (y1 - y0))
            stretch = min(max(wanted, 1 / placement.max_stretch), placement.max_stretch)
        ref_y = float(sizes.cy[row])
    else:
        scale = ratio * float(rng.uniform(*placement.scale))
    if placement.position == "data":
        cx = (float(sizes.cx[row]) + float(rng.normal(0, 0.08))) * tw
        cy = (float(sizes.cy[row]) + float(rng.normal(0, 0.04))) * th
    elif placement.position == "uniform":
        top = placement.horizon if placement.ground_plane else 0.0
        cx, cy = float(rng.uniform(0, tw)), float(rng.uniform(top, 1.0)) * th
    else:
        cx = kept_center[0] + float(rng.uniform(-placement.max_translate, placement.max_translate)) * tw
        cy = kept_center[1] + float(rng.uniform(-placement.max_translate, placement.max_translate)) * th
    if placement.ground_plane:
        cy = max(cy, (placement.horizon + 0.02) * th)
    center = (min(max(cx, 0.0), tw - 1.0), min(max(cy, 0.0), th - 1.0))
    if placement.ground_plane:
        scale *= ground_factor(center[1] / th, ref_y, placement.horizon)
    return Transform(scale, angle, flip, center, stretch)


def ground_factor(y: float, ref_y: float, horizon: float) -> float:
    """Linear size factor of an object centred at height ``y`` (share of the height, from the top) on a flat
    ground, relative to the same object observed at ``ref_y``: distance below the horizon over the reference's
    (kept within 0.05 .. 3; objects at or above the horizon get the smallest factor)."""
    below, ref_below = y - horizon, max(ref_y - horizon, 0.05)
    return min(max(below / ref_below, 0.05), 3.0)


@dataclass
class WarpedRegion:
    """A region transformed into target coordinates, kept to its window.

    Attributes:
        window: ``(x0, y0, x1, y1)`` half-open in the target (clipped to it).
        mask: ``h x w bool`` region pixels in the window.
        image: ``h x w x 3 uint8`` region image in the window, or ``None``.
    """

    window: tuple[int, int, int, int]
    mask: np.ndarray
    image: np.ndarray | None


def warp_region(
    region: Region, transform: Transform, target_shape: tuple[int, int], pad: int = 0, with_image: bool = True
) -> WarpedRegion:
    """The region's mask (nearest) and image (bilinear) in target coordinates, computed only over the
    window its transformed crop covers (plus ``pad`` pixels), so the cost follows the region, not the map.

    Args:
        with_image: warp the image too (else ``image`` is ``None``: see :func:`warp_image`, e.g. once a
            placement passed its checks).
    """
    import cv2

    th, tw = target_shape
    h, w = region.mask.shape
    matrix = transform.matrix(w, h)
    corners = matrix @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], dtype=np.float64)
    x0 = max(0, int(np.floor(corners[0].min())) - pad)
    y0 = max(0, int(np.floor(corners[1].min())) - pad)
    x1 = min(tw, int(np.ceil(corners[0].max())) + 1 + pad)
    y1 = min(th, int(np.ceil(corners[1].max())) + 1 + pad)
    if x1 <= x0 or y1 <= y0:
        return WarpedRegion((0, 0, 0, 0), np.zeros((0, 0), bool), None)
    shifted = matrix.copy()
    shifted[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(region.mask.astype(np.uint8), shifted, size, flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0  # fmt: skip
    warped = WarpedRegion((x0, y0, x1, y1), mask, None)
    return warp_image(region, transform, warped) if with_image else warped


def warp_image(region: Region, transform: Transform, warped: WarpedRegion) -> WarpedRegion:
    """``warped`` with the region's image (``h x w x 3 uint8``, bilinear) warped into its window."""
    import cv2

    x0, y0, x1, y1 = warped.window
    if region.image is None or x1 <= x0 or y1 <= y0:
        return warped
    h, w = region.mask.shape
    shifted = transform.matrix(w, h)
    shifted[:, 2] -= (x0, y0)
    image = cv2.warpAffine(region.image, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return WarpedRegion(warped.window, warped.mask, image)


def paste(
    labels: np.ndarray,
    image: np.ndarray | None,
    warped: WarpedRegion,
    class_index: int,
    placement: Placement,
    ignore_index: int = IGNORE_INDEX,
) -> int:
    """Paint one warped region into a label map (and its image) **in place**, honouring protection and
    layer, and lay the optional ignore ring around it.

    Args:
        labels: ``H x W uint8`` map, modified.
        image: ``H x W x 3 uint8`` image, modified, or ``None``.

    Returns:
        the number of pixels pasted.
    """
    x0, y0, x1, y1 = warped.window
    if x1 <= x0:
        return 0
    window = labels[y0:y1, x0:x1]
    before = window.copy() if placement.ignore_border > 0 else window
    allowed = warped.mask.copy()
    if placement.protected:
        allowed &= ~np.isin(window, placement.protected)
    if placement.layer == "under":
        allowed &= window == 0
    window[allowed] = class_index
    if image is not None and warped.image is not None:
        image[y0:y1, x0:x1][allowed] = warped.image[allowed]
    if placement.ignore_border > 0 and allowed.any():
        import cv2

        size = 2 * placement.ignore_border + 1
        ring = cv2.dilate(allowed.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
        ring &= ~allowed
        if placement.protected:
            ring &= ~np.isin(before, placement.protected)
        window[ring] = ignore_index
    return int(allowed.sum())


@dataclass
class Recombined:
    """A recombined label map with its image and provenance.

    Attributes:
        label_map: ``H x W uint8``.
        image: ``H x W x 3 uint8`` cut-and-paste image, or ``None`` when no images were given.
        steps: one record per pasted region (region provenance, transform, pixels pasted).
    """

    label_map: np.ndarray
    image: np.ndarray | None
    steps: list[dict] = field(default_factory=list)


def overlay(
    target: np.ndarray,
    regions: Sequence[Region],
    placement: Placement,
    rng: np.random.Generator,
    *,
    target_image: np.ndarray | None = None,
    ignore_index: int = IGNORE_INDEX,
    sizes=None,
    background_overlap: float = 1.0,
    stuff: Sequence[int] = (),
    limits=None,
    redraw_sizes: bool = False,
) -> Recombined:
    """Paste regions onto a target map in order (later regions on top).

    Random placements go through the same routine as compositing (:func:`core.labels.placement.place_region`):
    a region that finds no place within the limits is skipped and recorded as such.

    Args:
        target: ``H x W uint8`` label map.
        regions: the regions (single-label mode: one; multi-label mode: one per rare class).
        rng: the only source of randomness (transforms).
        target_image: ``H x W x 3 uint8`` paired image; when given, regions' images are pasted too.
        sizes: observed objects for ``size`` / ``position`` ``data`` placements (see :func:`sample_transform`).
        background_overlap: largest share of each of the target's own objects (connected components of its
            thing classes) that pasted regions may hide, all together; 1 turns the check off. Random
            placements only: ``keep`` puts a region back where it was, whatever it covers.
        stuff: class indices that are regions, not objects (not protected by ``background_overlap``).
        limits: attempts, truncation and overlap limits (:class:`core.labels.placement.Limits`; default:
            10 attempts, no truncation or overlap limit).
        redraw_sizes: draw a new size on every placement attempt (a last resort: it favours small sizes).
    """
    from core.labels.placement import Limits, background_objects, place_region

    target = np.asarray(target)
    if target.ndim != 2 or target.dtype != np.uint8:
        raise InvalidInput(f"target label map must be H x W uint8, got shape {target.shape} dtype {target.dtype}")
    if target_image is not None and target_image.shape[:2] != target.shape:
        raise InvalidInput(
            f"target image is {target_image.shape[1]}x{target_image.shape[0]}, its map {target.shape[1]}x{target.shape[0]}"
        )
    labels, image = target.copy(), None if target_image is None else target_image.copy()
    random = placement.mode == "random"
    background = background_objects(target, set(stuff), background_overlap, ignore_index) if random else None
    taken = np.zeros(target.shape, bool)
    steps = []
    for region in regions:
        if region.class_index == ignore_index:
            raise InvalidInput("the ignore index cannot be pasted as a region")
        if not random:
            transform = sample_transform(region, target.shape, placement, rng, sizes)
            warped = warp_region(region, transform, target.shape, pad=placement.ignore_border)
        else:
            placed = place_region(region, labels, taken, placement, limits or Limits(), rng,
                                  pad=placement.ignore_border, sizes=sizes, background=background,
                                  redraw_sizes=redraw_sizes)  # fmt: skip
            if placed is None:
                steps.append({"region": region.record(), "skipped": "no placement within the limits"})
                continue
            transform, warped = placed.transform, warp_image(region, placed.transform, placed.warped)
            if placed.hides is not None:
                background.hidden += placed.hides
        pasted = paste(labels, image, warped, region.class_index, placement, ignore_index)
        x0, y0, x1, y1 = warped.window
        taken[y0:y1, x0:x1] |= warped.mask
        steps.append({"region": region.record(), "transform": transform.record(), "pixels": pasted})
    return Recombined(labels, image, steps)


def band_map(shape: tuple[int, int], bands: Sequence[tuple[int, float]]) -> np.ndarray:
    """A label map of horizontal bands, top to bottom (e.g. sky, building, road).

    Args:
        shape: ``(H, W)``.
        bands: ``(class index, share of the height)``; shares are normalised to fill the map.

    Returns:
        ``H x W uint8``.
    """
    if not bands:
        raise InvalidInput("give at least one band as (class, share of the height)")
    total = float(sum(share for _, share in bands))
    if total <= 0 or any(share < 0 for _, share in bands):
        raise InvalidInput(f"band shares must be non-negative and not all zero, got {[s for _, s in bands]}")
    height, width = shape
    out = np.zeros((height, width), dtype=np.uint8)
    edges = np.round(np.cumsum([0.0] + [share / total for _, share in bands]) * height).astype(int)
    for (cls, _), top, bottom in zip(bands, edges[:-1], edges[1:], strict=True):
        out[top:bottom] = cls
    return out


def reconstruct(
    base: np.ndarray,
    regions: Sequence[Region],
    placement: Placement,
    rng: np.random.Generator,
    *,
    base_image: np.ndarray | None = None,
    ignore_index: int = IGNORE_INDEX,
    sizes=None,
) -> Recombined:
    """A new map from a base map (a dataset map, or :func:`band_map`) plus pasted regions, in layer
    order (first region lowest). Every pixel keeps a label: the base covers the whole map."""
    return overlay(base, regions, placement, rng, target_image=base_image, ignore_index=ignore_index, sizes=sizes)
