"""Fully connected CRF (Krähenbühl & Koltun 2011, through pydensecrf) from a box or any soft mask.

The CRF runs on the crop around the box at a working size (its permutohedral lattice costs about a
second per 0.3 megapixels), and its foreground probability is upsampled back; kernel widths are given
in full-resolution pixels and scaled with the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InvalidInput, require_all
from core.types import Box


@dataclass(frozen=True)
class DenseCRFParams:
    """DenseCRF settings.

    Attributes:
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: the smoothness kernel's width (px) and weight.
        bilateral_sxy, bilateral_srgb, bilateral_compat: the appearance kernel's spatial width (px),
            colour width (0-255 units) and weight.
        box_confidence: foreground probability given to pixels inside the box when refining a box alone.
        working_size: long side of the crop the CRF runs on (0 = full resolution).
        margin: crop margin around the box, as a fraction of its size (plus 8 px).
    """

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 60.0
    bilateral_srgb: float = 10.0
    bilateral_compat: float = 5.0
    box_confidence: float = 0.6
    working_size: int = 320
    margin: float = 0.1

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.iterations <= 50, f"iterations must be 1..50, got {self.iterations}"),
            (self.gaussian_sxy > 0 and self.bilateral_sxy > 0, "kernel widths (sxy) must be positive"),
            (self.bilateral_srgb > 0, f"bilateral_srgb must be positive, got {self.bilateral_srgb}"),
            (self.gaussian_compat >= 0 and self.bilateral_compat >= 0, "kernel weights (compat) must be >= 0"),
            (0.5 < self.box_confidence < 1, f"box_confidence must be in (0.5, 1), got {self.box_confidence}"),
            (self.working_size == 0 or self.working_size >= 32, f"working_size must be 0 or >= 32, got {self.working_size}"),
            (0 <= self.margin <= 2, f"margin must be 0..2, got {self.margin}"),
        ]  # fmt: skip
        require_all(checks, "DenseCRF")


def check_probability(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Validate a soft mask: ``H x W`` finite values in ``[0, 1]``.

    Raises:
        InvalidInput: wrong shape, NaN or infinite values (counted), or values outside ``[0, 1]``.
    """
    prob = np.asarray(probability)
    if prob.shape != tuple(shape):
        raise InvalidInput(f"soft mask has shape {prob.shape}, expected {tuple(shape)} (the image's H x W)")
    if not np.issubdtype(prob.dtype, np.number) or np.iscomplexobj(prob):
        raise InvalidInput(f"soft mask must hold real numbers, got dtype {prob.dtype}")
    prob = prob.astype(np.float32, copy=False)
    bad = ~np.isfinite(prob)
    if bad.any():
        raise InvalidInput(f"soft mask holds {int(bad.sum())} NaN or infinite values; give probabilities in [0, 1]")
    if prob.min() < 0 or prob.max() > 1:
        raise InvalidInput(
            f"soft mask values span [{prob.min():.3g}, {prob.max():.3g}]; probabilities must be in [0, 1]"
        )
    return prob


CLAMPED_UNARY = 1e4  # energy of the forbidden label at a clamped (stroke) pixel


def crf_on_crop(
    rgb: np.ndarray,
    probability: np.ndarray,
    params: DenseCRFParams,
    scale: float,
    hard: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Mean-field inference on one (working-size) crop.

    Args:
        rgb: ``h x w x 3 uint8`` RGB.
        probability: ``h x w float32`` foreground probability in ``[0, 1]``.
        scale: working size / full size, to scale the kernel widths.
        hard: ``(object, not_object)`` ``h x w bool`` pixels whose unaries are clamped (probability 1 / 0:
            the other label costs ``CLAMPED_UNARY``), or ``None``.

    Returns:
        ``h x w float32`` posterior foreground probability.
    """
    import pydensecrf.densecrf as dcrf

    height, width = probability.shape
    prob = np.clip(probability, 1e-5, 1 - 1e-5)
    unary = -np.log(np.stack([1.0 - prob, prob]).reshape(2, -1)).astype(np.float32)
    if hard is not None:
        fg, bg = hard[0].ravel(), hard[1].ravel()
        unary[0, fg], unary[1, fg] = CLAMPED_UNARY, 0.0
        unary[0, bg], unary[1, bg] = 0.0, CLAMPED_UNARY
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=max(0.5, params.gaussian_sxy * scale), compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=max(0.5, params.bilateral_sxy * scale), srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(rgb), compat=params.bilateral_compat,
    )  # fmt: skip
    q = np.array(crf.inference(params.iterations), dtype=np.float32).reshape(2, height, width)
    return q[1]


def densecrf_refine(
    image_rgb: np.ndarray,
    probability: np.ndarray,
    box: Box,
    params: DenseCRFParams | None = None,
    obj: np.ndarray | None = None,
    not_obj: np.ndarray | None = None,
) -> np.ndarray:
    """Refine a soft mask with a fully connected CRF inside a box.

    Args:
        image_rgb: ``H x W x 3 uint8`` RGB.
        probability: ``H x W`` foreground probabilities in ``[0, 1]`` (NaN/inf refused).
        box: where to work (a crop around it); the result is empty outside it.
        obj, not_obj: ``H x W bool`` correction-stroke pixels, or ``None``: their unaries are clamped
            (probability 1 / 0, also at the working size, where a small pixel touching a stroke is clamped),
            and the result holds them (object pixels inside the box set, not-object pixels clear).

    Returns:
        ``H x W bool`` mask.
    """
    import cv2

    from core.refine.grabcut import crop_window, resize_hard

    params = params or DenseCRFParams()
    height, width = image_rgb.shape[:2]
    prob = check_probability(probability, (height, width))
    box_mask = box.mask(height, width)
    corrected = obj is not None or not_obj is not None
    obj = np.zeros((height, width), bool) if obj is None else obj & box_mask
    not_obj = np.zeros((height, width), bool) if not_obj is None else not_obj
    x0, y0, x1, y1 = crop_window(box, height, width, params.margin)
    crop_rgb = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
    crop_prob = prob[y0:y1, x0:x1]
    hard = (obj[y0:y1, x0:x1], not_obj[y0:y1, x0:x1]) if corrected else None
    if hard is not None:
        crop_prob = np.where(hard[0], 1.0, np.where(hard[1], 0.0, crop_prob)).astype(np.float32)
    ch, cw = crop_prob.shape
    scale = 1.0 if params.working_size == 0 else min(1.0, params.working_size / max(ch, cw))
    if scale < 1:
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        crop_rgb = cv2.resize(crop_rgb, size, interpolation=cv2.INTER_AREA)
        crop_prob = cv2.resize(crop_prob, size, interpolation=cv2.INTER_AREA)
        if hard is not None:
            hard = resize_hard(hard, size)
    posterior = crf_on_crop(crop_rgb, crop_prob, params, scale, hard)
    if scale < 1:
        posterior = cv2.resize(posterior, (cw, ch), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((height, width), dtype=bool)
    out[y0:y1, x0:x1] = posterior > 0.5
    return ((out & box_mask) | obj) & ~not_obj


def box_probability(box: Box, height: int, width: int, confidence: float) -> np.ndarray:
    """``H x W float32``: ``confidence`` inside the box, a small value outside."""
    prob = np.full((height, width), 1e-3, dtype=np.float32)
    clipped = box.clip(width, height)
    prob[clipped.y0 : clipped.y1, clipped.x0 : clipped.x1] = confidence
    return prob


def soft_from_mask(mask: np.ndarray, confidence: float = 0.85) -> np.ndarray:
    """A hard mask as probabilities: ``confidence`` on it, ``1 - confidence`` off it (``H x W float32``)."""
    return np.where(mask, confidence, 1.0 - confidence).astype(np.float32)
