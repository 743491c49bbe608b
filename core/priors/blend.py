"""Visual prior blending (Che et al. 2025): ``V = w1 * V_image + w2 * V_mask``, clipped, as the RGB
condition image a ControlNet or T2I-Adapter takes. Their best weights: w1 = 0.7, w2 = 0.9."""

from __future__ import annotations

import numpy as np

from core.errors import InvalidInput

DEFAULT_W1 = 0.7
DEFAULT_W2 = 0.9


def _prepared(prior: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    """A prior (``h x w`` or ``h x w x 3`` uint8) validated and resized to ``shape`` (nearest for colour
    renderings, whose colours are labels; bilinear for edge maps)."""
    import cv2

    if prior is None:
        return None
    arr = np.asarray(prior)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise InvalidInput(f"{name} must be an h x w or h x w x 3 uint8 map, got shape {arr.shape} dtype {arr.dtype}")
    if arr.shape[:2] != tuple(shape):
        interpolation = cv2.INTER_NEAREST if arr.ndim == 3 else cv2.INTER_LINEAR
        arr = cv2.resize(arr, (shape[1], shape[0]), interpolation=interpolation)
    return np.ascontiguousarray(arr)


def blend(
    v_image: np.ndarray | None,
    v_mask: np.ndarray | None,
    w1: float = DEFAULT_W1,
    w2: float = DEFAULT_W2,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Weighted sum of an image prior and a mask prior at a common resolution, clipped to 0-255.

    Args:
        v_image: ``h x w`` or ``h x w x 3 uint8`` prior of the image, or ``None``.
        v_mask: ``h x w`` or ``h x w x 3 uint8`` prior of the label map, or ``None``.
        w1, w2: their weights, each in ``[0, 4]``.
        shape: output ``(H, W)``; default the image prior's size (else the mask prior's).

    Returns:
        ``H x W x 3 uint8`` condition image.

    Raises:
        InvalidInput: both priors missing, weights out of range or not finite, bad arrays.
    """
    for name, w in (("w1", w1), ("w2", w2)):
        if not np.isfinite(w) or not 0 <= w <= 4:
            raise InvalidInput(f"{name} must be a number in [0, 4], got {w}")
    if v_image is None and v_mask is None:
        raise InvalidInput("blend needs at least one prior (image or mask)")
    reference = v_image if v_image is not None else v_mask
    shape = tuple(shape) if shape is not None else tuple(np.asarray(reference).shape[:2])
    a = _prepared(v_image, shape, "image prior")
    b = _prepared(v_mask, shape, "mask prior")
    if a is not None and b is not None and a.ndim != b.ndim:  # grey edges with a colour rendering
        a, b = _as_rgb(a), _as_rgb(b)
    import cv2

    # cv2.addWeighted computes w1*a + w2*b in floating point and saturates to 0..255 (the clip).
    if a is None:
        out = cv2.addWeighted(b, float(w2), b, 0.0, 0.0)
    elif b is None:
        out = cv2.addWeighted(a, float(w1), a, 0.0, 0.0)
    else:
        out = cv2.addWeighted(a, float(w1), b, float(w2), 0.0)
    return _as_rgb(out)


def _as_rgb(arr: np.ndarray) -> np.ndarray:
    return arr if arr.ndim == 3 else np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
