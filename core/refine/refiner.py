"""The box-refinement API: one entry point over every method, with per-image caching.

    refiner = BoxRefiner()
    mask = refiner.refine(image, Box(10, 20, 200, 180, label=15), RefineSettings("auto"))
    result = refiner.label_map(image, boxes, RefineSettings("grabcut+crf"), overlap="smaller")

Work that depends only on the image (the hash, the Lab conversion, SAM's embedding) is cached by the
image's content hash, and each box's result by (image, box, settings): dragging a box or switching
back to an earlier method is quick.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from core.errors import InvalidInput
from core.models import ModelRegistry, default_registry
from core.progress import CancelToken, ProgressFn, track
from core.refine.densecrf import DenseCRFParams, box_probability, densecrf_refine, soft_from_mask
from core.refine.grabcut import GrabCutParams, fast_grabcut, opencv_grabcut, to_color_space
from core.refine.labelmap import compose_label_map
from core.refine.methods import AUTO_METHOD, METHODS
from core.refine.sam import SAM_MODEL_ID
from core.types import Box

MAX_IMAGE_SIDE = 20_000


@dataclass(frozen=True)
class RefineSettings:
    """Which method refines boxes, with its parameters.

    Attributes:
        method: one of :data:`METHODS`.
        grabcut: parameters of ``grabcut-fast`` (also the first stage of ``grabcut+crf``).
        opencv_iterations: iterations of OpenCV's ``grabcut``.
        crf: parameters of every CRF stage.
        sam_model: registry id of the SAM weights.
    """

    method: str = "auto"
    grabcut: GrabCutParams = field(default_factory=GrabCutParams)
    opencv_iterations: int = 5
    crf: DenseCRFParams = field(default_factory=DenseCRFParams)
    sam_model: str = SAM_MODEL_ID

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInput(f"unknown refinement method {self.method!r}; accepted: {', '.join(METHODS)}")
        if not 1 <= self.opencv_iterations <= 50:
            raise InvalidInput(f"OpenCV GrabCut iterations must be 1..50, got {self.opencv_iterations}")

    @property
    def resolved_method(self) -> str:
        """The concrete method (``auto`` resolved)."""
        return AUTO_METHOD if self.method == "auto" else self.method

    def record(self) -> dict:
        """Every setting as plain JSON-able values (for provenance)."""
        record = asdict(self)
        record["resolved_method"] = self.resolved_method
        return record


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept ``H x W`` greyscale, ``H x W x 1``, ``H x W x 3`` RGB or ``H x W x 4`` RGBA (alpha dropped)
    ``uint8`` images and return ``H x W x 3 uint8`` RGB.

    Raises:
        InvalidInput: another dtype or shape, an empty image, or one beyond 20000 px on a side.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidInput(f"images must be uint8, got {arr.dtype}; load files with core.io.images.load_image")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInput(f"image shape {arr.shape} is not H x W, H x W x 3 or H x W x 4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput(f"image is empty (shape {arr.shape})")
    if max(arr.shape[:2]) > MAX_IMAGE_SIDE:
        raise InvalidInput(f"image is {arr.shape[1]}x{arr.shape[0]}; at most {MAX_IMAGE_SIDE} px per side is accepted")
    return np.ascontiguousarray(arr)


def image_key(image: np.ndarray) -> str:
    """A content hash of an image array (shape included)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass
class _PreparedImage:
    key: str
    rgb: np.ndarray
    converted: dict[str, np.ndarray] = field(default_factory=dict)

    def in_space(self, space: str) -> np.ndarray:
        if space not in self.converted:
            self.converted[space] = to_color_space(self.rgb, space)
        return self.converted[space]


@dataclass
class LabelMapResult:
    """Boxes refined into one label map.

    Attributes:
        label_map: ``H x W uint8``.
        masks: one ``H x W bool`` mask per box (before overlaps were resolved).
        seconds: wall time per box.
        settings: the settings record.
    """

    label_map: np.ndarray
    masks: list[np.ndarray]
    seconds: list[float]
    settings: dict


class BoxRefiner:
    """Refines boxes into masks with any method, caching per-image work.

    Args:
        registry: where SAM weights come from (the default registry when ``None``).
        images_kept: how many prepared images to cache.
        results_kept: how many per-box results to cache.
    """

    def __init__(self, registry: ModelRegistry | None = None, images_kept: int = 4, results_kept: int = 64):
        self.registry = registry
        self._images: OrderedDict[str, _PreparedImage] = OrderedDict()
        self._results: OrderedDict[tuple, tuple[tuple[int, int, int, int], np.ndarray]] = OrderedDict()
        self._images_kept = images_kept
        self._results_kept = results_kept
        self._lock = threading.Lock()

    def _prepare(self, image: np.ndarray) -> _PreparedImage:
        rgb = as_rgb(image)
        key = image_key(rgb)
        with self._lock:
            prepared = self._images.get(key)
            if prepared is None:
                prepared = self._images[key] = _PreparedImage(key, rgb)
                while len(self._images) > self._images_kept:
                    self._images.popitem(last=False)
            self._images.move_to_end(key)
        return prepared

    def refine(self, image: np.ndarray, box: Box, settings: RefineSettings | None = None) -> np.ndarray:
        """One box to a mask.

        Args:
            image: ``H x W x 3 uint8`` RGB (greyscale and RGBA accepted, see :func:`as_rgb`).
            box: a box overlapping the image (clipped to it).

        Returns:
            ``H x W bool`` mask, never outside the box.

        Raises:
            InvalidInput: the box lies outside the image, or the image is unusable.
            ModelUnavailable: ``sam`` methods without the weights (the message says where they go).
        """
        settings = settings or RefineSettings()
        prepared = self._prepare(image)
        height, width = prepared.rgb.shape[:2]
        clipped = box.clip(width, height)
        key = (prepared.key, clipped.x0, clipped.y0, clipped.x1, clipped.y1, settings)
        with self._lock:
            cached = self._results.get(key)
            if cached is not None:
                self._results.move_to_end(key)
        if cached is not None:
            return _unpack(cached, height, width)
        mask = self._run(prepared, clipped, settings)
        with self._lock:
            self._results[key] = _pack(mask, clipped)
            while len(self._results) > self._results_kept:
                self._results.popitem(last=False)
        return mask

    def _run(self, prepared: _PreparedImage, box: Box, settings: RefineSettings) -> np.ndarray:
        method = settings.resolved_method
        height, width = prepared.rgb.shape[:2]
        if method == "grabcut-fast":
            return fast_grabcut(prepared.in_space(settings.grabcut.color_space), box, settings.grabcut)
        if method == "grabcut":
            return opencv_grabcut(prepared.rgb, box, settings.opencv_iterations)
        if method == "densecrf":
            prob = box_probability(box, height, width, settings.crf.box_confidence)
            return densecrf_refine(prepared.rgb, prob, box, settings.crf)
        if method == "grabcut+crf":
            first = fast_grabcut(prepared.in_space(settings.grabcut.color_space), box, settings.grabcut)
            return densecrf_refine(prepared.rgb, soft_from_mask(first), box, settings.crf)
        probability = self._sam_probability(prepared, box, settings)
        if method == "sam":
            return (probability > 0.5) & box.mask(height, width)
        return densecrf_refine(prepared.rgb, probability, box, settings.crf)

    def _sam_probability(self, prepared: _PreparedImage, box: Box, settings: RefineSettings) -> np.ndarray:
        registry = self.registry or default_registry()
        predictor = registry.load(settings.sam_model)
        return predictor.predict(prepared.key, prepared.rgb, box)

    def label_map(
        self,
        image: np.ndarray,
        boxes: Sequence[Box],
        settings: RefineSettings | None = None,
        *,
        overlap: str = "smaller",
        ignore_band: int = 0,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> LabelMapResult:
        """Refine every box and paint the masks into one label map (see :func:`compose_label_map`).

        Raises:
            Cancelled: when ``cancel`` is set between boxes.
        """
        settings = settings or RefineSettings()
        rgb = as_rgb(image)
        masks: list[np.ndarray] = []
        seconds: list[float] = []
        for box in track(boxes, progress=progress, cancel=cancel, message="refining box"):
            start = time.perf_counter()
            masks.append(self.refine(rgb, box, settings))
            seconds.append(time.perf_counter() - start)
        label_map = compose_label_map(rgb.shape[:2], list(boxes), masks, overlap=overlap, ignore_band=ignore_band)
        record = settings.record() | {"overlap": overlap, "ignore_band": ignore_band}
        return LabelMapResult(label_map, masks, seconds, record)


def _pack(mask: np.ndarray, box: Box) -> tuple[tuple[int, int, int, int], np.ndarray]:
    return (box.x0, box.y0, box.x1, box.y1), mask[box.y0 : box.y1, box.x0 : box.x1].copy()


def _unpack(packed: tuple[tuple[int, int, int, int], np.ndarray], height: int, width: int) -> np.ndarray:
    (x0, y0, x1, y1), crop = packed
    out = np.zeros((height, width), dtype=bool)
    out[y0:y1, x0:x1] = crop
    return out
