"""Box -> mask with GrabCut: OpenCV's reference implementation, and SegStudio's fast one.

The fast GrabCut does less work without dropping quality:

1. crop the box with a margin (the margin supplies the background colour samples);
2. fit the colour models and cut at a reduced working size (160 px on the long side by default) in
   CIE Lab, with the smoothness weight scaled by the working scale so that boundary length and region
   area keep their full-resolution balance (without that, working small over-smooths);
3. bring the result back to full resolution edge-aware: upsample, then re-decide only a thin band
   around the boundary with a graph cut on full-resolution colours, the colour models frozen.

On ``../shared/data/grabcut50`` this measures better than OpenCV's full-resolution GrabCut at a fraction
of the time (``benchmarks/boxmask.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.errors import require_all
from core.refine.gmm import ColorGMM
from core.refine.graph import HARD, band_cut, contrast_beta, contrast_weights, grid_pairs, min_cut
from core.types import Box

COLOR_SPACES = ("lab", "rgb")
MODEL_SAMPLES_PER_SCALE = 6000  # pixels per side used to re-estimate the colour models at each step
MAX_UPSAMPLING_STEP = 4.0  # the full-resolution step climbs at most this factor at a time
CONVERGED_FRACTION = 0.0005  # stop iterating once fewer pixels than this share change label
MIN_REFINABLE_AREA = 16  # boxes smaller than this many pixels are returned filled: too few pixels to model


@dataclass(frozen=True)
class GrabCutParams:
    """Settings of the fast GrabCut.

    Attributes:
        iterations: colour-model / cut alternations at the working size.
        working_size: long side of the working crop in pixels; 0 works at full resolution.
        margin: crop margin around the box as a fraction of its size (plus 8 pixels).
        components: Gaussians per colour model.
        gamma: smoothness weight at full resolution (GrabCut's 50).
        connectivity: 4 or 8 neighbours.
        color_space: ``"lab"`` or ``"rgb"``.
        band: half-width of the full-resolution refinement band, in working-size pixels (0: plain upsampling).
        center_prior: strength of a location prior that makes foreground cheaper near the box centre
            (``center_prior * r^2 / 2`` added to the foreground cost, ``r`` the elliptical radius in the box,
            1 on the box's edge midpoints). Loose boxes hold background near their borders; on grabcut50 this
            prior lifts mean IoU from 0.84 to 0.87.
    """

    iterations: int = 6
    working_size: int = 160
    margin: float = 0.1
    components: int = 5
    gamma: float = 50.0
    connectivity: int = 4
    color_space: str = "lab"
    band: float = 1.5
    center_prior: float = 3.0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.iterations <= 50, f"iterations must be 1..50, got {self.iterations}"),
            (self.working_size == 0 or self.working_size >= 32, f"working_size must be 0 or >= 32 px, got {self.working_size}"),
            (0 <= self.margin <= 2, f"margin must be 0..2 (a fraction of the box), got {self.margin}"),
            (1 <= self.components <= 20, f"components must be 1..20, got {self.components}"),
            (0 <= self.gamma <= 1000, f"gamma must be 0..1000, got {self.gamma}"),
            (self.connectivity in (4, 8), f"connectivity must be 4 or 8, got {self.connectivity}"),
            (self.color_space in COLOR_SPACES, f"color_space must be one of {', '.join(COLOR_SPACES)}, got {self.color_space!r}"),
            (0 <= self.band <= 10, f"band must be 0..10 working pixels, got {self.band}"),
            (0 <= self.center_prior <= 50, f"center_prior must be 0..50, got {self.center_prior}"),
        ]  # fmt: skip
        require_all(checks, "GrabCut")


@dataclass
class WorkingCut:
    """The state of a fast GrabCut at its working size, before the full-resolution step.

    Attributes:
        crop: ``h x w x 3 uint8`` crop in the working colour space, full resolution.
        box_in_crop: ``h x w bool``, the box.
        scale: working size / full size (1.0 when working at full resolution).
        small: ``hs x ws x 3 float64`` working-size crop.
        small_box: ``hs x ws bool``.
        foreground: ``hs x ws bool``, the segmentation at the working size.
        fg_model, bg_model: the colour models.
        beta: contrast normaliser of the working crop.
    """

    crop: np.ndarray
    box_in_crop: np.ndarray
    scale: float
    small: np.ndarray
    small_box: np.ndarray
    foreground: np.ndarray
    fg_model: ColorGMM
    bg_model: ColorGMM
    beta: float

    def posterior(self) -> np.ndarray:
        """``hs x ws float32`` foreground probability from the colour models (0 outside the box)."""
        colors = self.small.reshape(-1, 3)
        cost_fg = ColorGMM.negative_log_likelihood(self.fg_model.component_log_likelihood(colors))
        cost_bg = ColorGMM.negative_log_likelihood(self.bg_model.component_log_likelihood(colors))
        prob = 1.0 / (1.0 + np.exp(np.clip(cost_fg - cost_bg, -50, 50)))
        prob = prob.reshape(self.small_box.shape).astype(np.float32)
        prob[~self.small_box] = 0.0
        return prob


def crop_window(box: Box, height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, x1, y1)`` around ``box`` with ``margin * size + 8`` pixels each side, clipped."""
    mx = int(margin * box.width) + 8
    my = int(margin * box.height) + 8
    return max(0, box.x0 - mx), max(0, box.y0 - my), min(width, box.x1 + mx), min(height, box.y1 + my)


def to_color_space(rgb: np.ndarray, space: str) -> np.ndarray:
    """``H x W x 3 uint8`` RGB to the working colour space (8-bit CIE Lab, or RGB unchanged)."""
    if space == "rgb":
        return rgb
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)


def _resize(array: np.ndarray, size: tuple[int, int], area: bool) -> np.ndarray:
    import cv2

    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def _background_samples(colors: np.ndarray, box_mask: np.ndarray) -> np.ndarray:
    """Colours to seed the background model: outside the box, or the box's border ring when the box
    covers (nearly) the whole crop (an image-sized box leaves no outside)."""
    outside = colors[~box_mask.ravel()]
    if len(outside) >= 20:
        return outside
    ring = np.zeros_like(box_mask)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    return colors[ring.ravel()]


def _center_prior(box_mask: np.ndarray, strength: float) -> np.ndarray:
    """Extra foreground cost ``strength * r^2 / 2`` of each box pixel (``np.nonzero`` order), ``r`` its
    elliptical radius from the box centre (1 at the edge midpoints)."""
    ys, xs = np.nonzero(box_mask)
    if strength <= 0 or not len(xs):
        return np.zeros(len(xs))
    u = (xs - (xs.min() + xs.max()) / 2) / max(1.0, (xs.max() - xs.min()) / 2)
    v = (ys - (ys.min() + ys.max()) / 2) / max(1.0, (ys.max() - ys.min()) / 2)
    return strength * (u * u + v * v) / 2


def segment_working(crop: np.ndarray, box_in_crop: np.ndarray, params: GrabCutParams) -> WorkingCut:
    """Steps 1-2: colour models and cuts at the working size.

    Args:
        crop: ``h x w x 3 uint8`` crop in the working colour space.
        box_in_crop: ``h x w bool`` box mask.
    """
    height, width = box_in_crop.shape
    scale = 1.0 if params.working_size == 0 else min(1.0, params.working_size / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = _resize(crop, size, area=True).astype(np.float64)
        small_box = _resize(box_in_crop.astype(np.uint8), size, area=False) > 0
        if not small_box.any():
            small_box[small_box.shape[0] // 2, small_box.shape[1] // 2] = True
    else:
        small, small_box = crop.astype(np.float64), box_in_crop.copy()
    colors = small.reshape(-1, 3)
    inside = small_box.ravel()
    first, second, distance = grid_pairs(*small_box.shape, params.connectivity)
    beta = contrast_beta(colors, first, second)
    # Boundary cost scales with length, region cost with area: keep their full-resolution ratio.
    weights = contrast_weights(colors, first, second, distance, params.gamma * scale, beta)
    fg_model = ColorGMM.fit(colors[inside], params.components)
    bg_model = ColorGMM.fit(_background_samples(colors, small_box), params.components)
    inside_colors = colors[inside]
    foreground = inside.copy()
    prior_fg = _center_prior(small_box, params.center_prior)
    for iteration in range(params.iterations):
        fg_ll = fg_model.component_log_likelihood(inside_colors)
        bg_ll_inside = bg_model.component_log_likelihood(inside_colors)
        cost_fg = np.full(len(colors), HARD)
        cost_bg = np.zeros(len(colors))
        cost_fg[inside] = ColorGMM.negative_log_likelihood(fg_ll) + prior_fg
        cost_bg[inside] = ColorGMM.negative_log_likelihood(bg_ll_inside)
        previous, foreground = foreground, min_cut(cost_fg, cost_bg, first, second, weights)
        changed = np.count_nonzero(previous != foreground)
        if iteration == params.iterations - 1 or (iteration > 0 and changed <= CONVERGED_FRACTION * len(foreground)):
            break
        fg_inside = foreground[inside]
        if fg_inside.sum() >= 2 * params.components:
            fg_model = fg_model.refit(inside_colors[fg_inside], fg_ll[fg_inside])
        background = ~foreground
        if background.sum() >= 2 * params.components:
            bg_model = bg_model.refit(colors[background])
    return WorkingCut(
        crop=crop, box_in_crop=box_in_crop, scale=scale, small=small,
        small_box=small_box, foreground=foreground.reshape(small_box.shape), fg_model=fg_model,
        bg_model=bg_model, beta=beta,
    )  # fmt: skip


def finish_full_resolution(cut: WorkingCut, foreground: np.ndarray, params: GrabCutParams) -> np.ndarray:
    """Step 3: bring a working-size segmentation to full resolution, edge-aware.

    Climbs in steps of at most 4x: at each step the mask is upsampled and only a band of
    ``params.band`` (previous-step) pixels around its boundary is re-decided by a graph cut on that
    step's colours, with the colour models frozen. Steps keep the band thin on large photos.

    Args:
        foreground: ``hs x ws bool`` working-size segmentation (``cut.foreground`` or a refinement of it).

    Returns:
        ``h x w bool`` segmentation of the full-resolution crop, inside the box only.
    """
    height, width = cut.box_in_crop.shape
    scale, mask = cut.scale, foreground
    while scale < 1.0:
        next_scale = min(1.0, scale * MAX_UPSAMPLING_STEP)
        if next_scale >= 1.0:
            colors_img, box_mask = cut.crop, cut.box_in_crop
        else:
            size = (max(1, round(width * next_scale)), max(1, round(height * next_scale)))
            colors_img = _resize(cut.crop, size, area=True)
            box_mask = _resize(cut.box_in_crop.astype(np.uint8), size, area=False) > 0
        shape = box_mask.shape
        upsampled = _resize(mask.astype(np.float32), (shape[1], shape[0]), area=False) > 0.5
        radius = int(np.ceil(params.band * next_scale / scale))
        mask = _band_refine(cut, colors_img, box_mask, upsampled, radius, params.gamma * next_scale, params)
        scale = next_scale
    return mask & cut.box_in_crop


def _models_at_scale(cut: WorkingCut, colors: np.ndarray, labels: np.ndarray) -> tuple[ColorGMM, ColorGMM]:
    """The colour models re-estimated (one hard-EM step) on a sample of this scale's pixels.

    Downsampling averages pixel noise away, so models fitted small are too narrow for full-resolution
    colours; one step on the larger scale's own pixels restores their spread, components unchanged.
    """
    rng = np.random.default_rng(0)
    models = []
    for model, side in ((cut.fg_model, labels), (cut.bg_model, ~labels)):
        index = np.flatnonzero(side)
        if len(index) < 4 * len(model.weights):
            models.append(model)
            continue
        if len(index) > MODEL_SAMPLES_PER_SCALE:
            index = rng.choice(index, MODEL_SAMPLES_PER_SCALE, replace=False)
        models.append(model.refit(colors[index].astype(np.float64)))
    return models[0], models[1]


def _band_refine(
    cut: WorkingCut, colors_img: np.ndarray, box_mask: np.ndarray, upsampled: np.ndarray, radius: int,
    gamma: float, params: GrabCutParams,
) -> np.ndarray:  # fmt: skip
    """Re-decide the pixels within ``radius`` of the boundary of ``upsampled`` (``h x w bool``)."""
    import cv2

    if radius < 1:
        return upsampled & box_mask
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    as_u8 = upsampled.astype(np.uint8)
    free = (cv2.dilate(as_u8, kernel) != cv2.erode(as_u8, kernel)) & box_mask
    colors = colors_img.reshape(-1, 3)
    fg_model, bg_model = _models_at_scale(cut, colors, upsampled.ravel())
    free_colors = colors[free.ravel()].astype(np.float64)
    cost_fg = ColorGMM.negative_log_likelihood(fg_model.component_log_likelihood(free_colors))
    cost_bg = ColorGMM.negative_log_likelihood(bg_model.component_log_likelihood(free_colors))
    refined = band_cut(colors, box_mask.shape, upsampled, free, cost_fg, cost_bg, gamma, cut.beta, params.connectivity)
    return refined & box_mask


def prepare_crop(
    image_ws: np.ndarray, box: Box, margin: float
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """The crop window, the crop (working colour space) and the box mask within it."""
    height, width = image_ws.shape[:2]
    x0, y0, x1, y1 = window = crop_window(box, height, width, margin)
    crop = np.ascontiguousarray(image_ws[y0:y1, x0:x1])
    box_in_crop = np.zeros(crop.shape[:2], dtype=bool)
    box_in_crop[box.y0 - y0 : box.y1 - y0, box.x0 - x0 : box.x1 - x0] = True
    return window, crop, box_in_crop


def paste(crop_mask: np.ndarray, window: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """An ``H x W bool`` image mask holding ``crop_mask`` at ``window``."""
    out = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = window
    out[y0:y1, x0:x1] = crop_mask
    return out


def fast_grabcut(image_ws: np.ndarray, box: Box, params: GrabCutParams | None = None) -> np.ndarray:
    """SegStudio's GrabCut: one box to a mask.

    Args:
        image_ws: ``H x W x 3 uint8`` image already in ``params.color_space`` (see :func:`to_color_space`).
        box: a box clipped to the image.

    Returns:
        ``H x W bool`` mask, never outside the box.
    """
    params = params or GrabCutParams()
    height, width = image_ws.shape[:2]
    if box.area < MIN_REFINABLE_AREA:
        return box.mask(height, width)
    window, crop, box_in_crop = prepare_crop(image_ws, box, params.margin)
    cut = segment_working(crop, box_in_crop, params)
    if not cut.foreground.any() and params.center_prior > 0:
        # The prior can tip a low-contrast box into "all background"; a box always holds something.
        cut = segment_working(crop, box_in_crop, replace(params, center_prior=0.0))
    if not cut.foreground.any():
        return box.mask(height, width)
    return paste(finish_full_resolution(cut, cut.foreground, params), window, height, width)


def opencv_grabcut(image_rgb: np.ndarray, box: Box, iterations: int = 5) -> np.ndarray:
    """OpenCV's GrabCut at full resolution (the reference method).

    A box covering the whole image leaves OpenCV no background samples (it would assert): its outer
    one-pixel ring is then marked as background.

    Args:
        image_rgb: ``H x W x 3 uint8`` RGB.

    Returns:
        ``H x W bool`` mask.
    """
    import cv2

    height, width = image_rgb.shape[:2]
    if box.area < MIN_REFINABLE_AREA or min(height, width) < 3:
        return box.mask(height, width)
    mask = np.full((height, width), cv2.GC_BGD, np.uint8)
    mask[box.y0 : box.y1, box.x0 : box.x1] = cv2.GC_PR_FGD
    if not (mask == cv2.GC_BGD).any():
        mask[[0, -1], :] = cv2.GC_BGD
        mask[:, [0, -1]] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    try:
        cv2.grabCut(bgr, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # e.g. a single-colour box: nothing to separate, the box is the answer
        return box.mask(height, width)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
