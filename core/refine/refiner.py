"""The box-refinement API: one entry point over every method, with per-image caching.

    refiner = BoxRefiner()
    mask = refiner.refine(image, Box(10, 20, 200, 180, label=15), RefineSettings("auto"))
    result = refiner.label_map(image, boxes, RefineSettings("grabcut+crf"), overlap="smaller")
    fixed = refiner.refine(image, box, settings, strokes=[Stroke.click(120, 90, positive=False)])

Work that depends only on the image (the hash, the Lab conversion, SAM's embedding) is cached by the
image's content hash, and each box's result by (image, box, settings, strokes): dragging a box or switching
back to an earlier method is quick. What ``grabcut-fast`` learnt from a box alone (crop, working-size
colours, colour models, segmentation) is kept too, so that a correction stroke re-cuts from it.

Correction strokes (:mod:`core.refine.corrections`) are hard constraints for every method:

=============== ===================================================================================
grabcut-fast    strokes applied one after the other from what the box alone taught (crop, colours,
                models, segmentation): stroke pixels fixed in the working-size cut and in every
                full-resolution band (infinite t-links), colour models updated with the stroke colours,
                a geodesic proximity prior around each stroke (:func:`core.refine.grabcut.apply_stroke`)
grabcut         OpenCV: ``GC_FGD`` / ``GC_BGD`` at the strokes, ``GC_INIT_WITH_MASK`` from the previous result
densecrf        unaries clamped at the strokes (probability 1 / 0)
grabcut+crf     both of the above
sam, sam+crf    stroke points as SAM point prompts with labels (plus the clamped CRF for ``sam+crf``)
=============== ===================================================================================

After any method, pixels under an object stroke are object and pixels under a not-object stroke are
not (enforced as a last step).
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
from core.refine.corrections import Stroke, Strokes, as_strokes, check_strokes, enforce, rasterize_strokes
from core.refine.densecrf import DenseCRFParams, box_probability, densecrf_refine, soft_from_mask
from core.refine.grabcut import (
    BoxCut,
    Correction,
    GrabCutParams,
    apply_stroke,
    finish_correction,
    grabcut_box,
    opencv_grabcut,
    start_correction,
    to_color_space,
)
from core.refine.labelmap import compose_label_map
from core.refine.methods import AUTO_METHOD, METHODS
from core.refine.sam import SAM_MODEL_ID
from core.types import Box

MAX_IMAGE_SIDE = 20_000
SAM_POINTS_PER_STROKE = 8  # a stroke becomes at most this many SAM point prompts


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

    def __init__(
        self, registry: ModelRegistry | None = None, images_kept: int = 4, results_kept: int = 64, states_kept: int = 8
    ):
        self.registry = registry
        self._images: OrderedDict[str, _PreparedImage] = OrderedDict()
        self._results: OrderedDict[tuple, tuple[tuple[int, int, int, int], np.ndarray]] = OrderedDict()
        self._states: OrderedDict[tuple, BoxCut] = OrderedDict()
        self._corrections: OrderedDict[tuple, Correction] = OrderedDict()
        self._images_kept = images_kept
        self._results_kept = results_kept
        self._states_kept = states_kept
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

    def refine(
        self,
        image: np.ndarray,
        box: Box,
        settings: RefineSettings | None = None,
        strokes: Sequence[Stroke] | Stroke | None = (),
    ) -> np.ndarray:
        """One box to a mask, optionally corrected by strokes.

        Args:
            image: ``H x W x 3 uint8`` RGB (greyscale and RGBA accepted, see :func:`as_rgb`).
            box: a box overlapping the image (clipped to it).
            strokes: correction strokes of this box, in drawing order (hard constraints, see the module
                docstring and :mod:`core.refine.corrections` for the rule on strokes outside the box).

        Returns:
            ``H x W bool`` mask, never outside the box; object stroke pixels set, not-object ones clear.

        Raises:
            InvalidInput: the box lies outside the image, the image is unusable, or an object stroke
                leaves the box (the message names the stroke and the box).
            ModelUnavailable: ``sam`` methods without the weights (the message says where they go).
        """
        settings = settings or RefineSettings()
        prepared = self._prepare(image)
        height, width = prepared.rgb.shape[:2]
        clipped = box.clip(width, height)
        strokes = check_strokes(as_strokes(strokes), clipped, height, width)
        return self._refined(prepared, clipped, settings, strokes)

    def _refined(
        self, prepared: _PreparedImage, clipped: Box, settings: RefineSettings, strokes: Strokes
    ) -> np.ndarray:
        height, width = prepared.rgb.shape[:2]
        key = (prepared.key, clipped.x0, clipped.y0, clipped.x1, clipped.y1, settings, strokes)
        with self._lock:
            cached = self._results.get(key)
            if cached is not None:
                self._results.move_to_end(key)
        if cached is not None:
            return _unpack(cached, height, width)
        mask = self._run(prepared, clipped, settings, strokes)
        if strokes:
            mask = enforce(mask, *rasterize_strokes(strokes, height, width), clipped)
        with self._lock:
            self._results[key] = _pack(mask, clipped)
            while len(self._results) > self._results_kept:
                self._results.popitem(last=False)
        return mask

    def _box_cut(self, prepared: _PreparedImage, box: Box, params: GrabCutParams) -> BoxCut:
        """What grabcut-fast learnt from ``box`` alone (cached)."""
        key = (prepared.key, box.x0, box.y0, box.x1, box.y1, params)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return state
        state = grabcut_box(prepared.in_space(params.color_space), box, params)
        with self._lock:
            self._states[key] = state
            while len(self._states) > self._states_kept:
                self._states.popitem(last=False)
        return state

    def _fast(self, prepared: _PreparedImage, box: Box, params: GrabCutParams, strokes: Strokes) -> np.ndarray:
        """grabcut-fast, strokes applied one after the other from the box alone's state; each prefix's state
        is cached, so a new stroke costs one local re-cut."""
        height, width = prepared.rgb.shape[:2]
        state = self._box_cut(prepared, box, params)
        if not strokes:
            return state.mask(height, width)
        image_ws = prepared.in_space(params.color_space)
        obj, not_obj = rasterize_strokes(strokes, height, width)
        if state.cut is None:
            return finish_correction(image_ws, state, None, obj, not_obj, params)
        base = (prepared.key, box.x0, box.y0, box.x1, box.y1, params)
        done, correction = 0, None
        with self._lock:
            for count in range(len(strokes), 0, -1):
                correction = self._corrections.get(base + (strokes[:count],))
                if correction is not None:
                    done = count
                    self._corrections.move_to_end(base + (strokes[:count],))
                    break
        correction = correction or start_correction(state)
        for count in range(done + 1, len(strokes) + 1):
            so_far = rasterize_strokes(strokes[:count], height, width)
            stroke = strokes[count - 1]
            correction = apply_stroke(image_ws, state, correction, *so_far, stroke.rasterize(height, width),
                                      stroke.positive, params)  # fmt: skip
            with self._lock:
                self._corrections[base + (strokes[:count],)] = correction
                while len(self._corrections) > self._results_kept:
                    self._corrections.popitem(last=False)
        return finish_correction(image_ws, state, correction, obj, not_obj, params)

    def _run(self, prepared: _PreparedImage, box: Box, settings: RefineSettings, strokes: Strokes = ()) -> np.ndarray:
        method = settings.resolved_method
        height, width = prepared.rgb.shape[:2]
        hard = rasterize_strokes(strokes, height, width) if strokes else None
        obj, not_obj = hard if hard is not None else (None, None)
        if method == "grabcut-fast":
            return self._fast(prepared, box, settings.grabcut, strokes)
        if method == "grabcut":
            if hard is None:
                return opencv_grabcut(prepared.rgb, box, settings.opencv_iterations)
            initial = self._refined(prepared, box, settings, ())
            return opencv_grabcut(prepared.rgb, box, settings.opencv_iterations, obj, not_obj, initial)
        if method == "densecrf":
            prob = box_probability(box, height, width, settings.crf.box_confidence)
            return densecrf_refine(prepared.rgb, prob, box, settings.crf, obj, not_obj)
        if method == "grabcut+crf":
            first = self._fast(prepared, box, settings.grabcut, strokes)
            return densecrf_refine(prepared.rgb, soft_from_mask(first), box, settings.crf, obj, not_obj)
        probability = self._sam_probability(prepared, box, settings, strokes)
        if method == "sam":
            mask = (probability > 0.5) & box.mask(height, width)
            return mask if hard is None else enforce(mask, obj, not_obj, box)
        return densecrf_refine(prepared.rgb, probability, box, settings.crf, obj, not_obj)

    def _sam_probability(
        self, prepared: _PreparedImage, box: Box, settings: RefineSettings, strokes: Strokes = ()
    ) -> np.ndarray:
        registry = self.registry or default_registry()
        predictor = registry.load(settings.sam_model)
        points: list[tuple[int, int]] = []
        labels: list[int] = []
        height, width = prepared.rgb.shape[:2]
        for stroke in strokes:
            for x, y in stroke.sample_points(SAM_POINTS_PER_STROKE):
                if 0 <= x < width and 0 <= y < height:
                    points.append((x, y))
                    labels.append(int(stroke.positive))
        if not points:
            return predictor.predict(prepared.key, prepared.rgb, box)
        return predictor.predict(prepared.key, prepared.rgb, box, points, labels)

    def label_map(
        self,
        image: np.ndarray,
        boxes: Sequence[Box],
        settings: RefineSettings | None = None,
        *,
        strokes: Sequence[Sequence[Stroke]] | None = None,
        overlap: str = "smaller",
        ignore_band: int = 0,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> LabelMapResult:
        """Refine every box and paint the masks into one label map (see :func:`compose_label_map`).

        Args:
            strokes: one sequence of correction strokes per box (``None``: no corrections).

        Raises:
            InvalidInput: ``strokes`` does not hold one entry per box, or a stroke breaks the rule.
            Cancelled: when ``cancel`` is set between boxes.
        """
        settings = settings or RefineSettings()
        rgb = as_rgb(image)
        if strokes is not None and len(strokes) != len(boxes):
            raise InvalidInput(f"{len(boxes)} boxes but {len(strokes)} stroke lists; give one (maybe empty) per box")
        per_box = list(strokes) if strokes is not None else [()] * len(boxes)
        masks: list[np.ndarray] = []
        seconds: list[float] = []
        pairs = list(zip(boxes, per_box, strict=True))
        for box, box_strokes in track(pairs, progress=progress, cancel=cancel, message="refining box"):
            start = time.perf_counter()
            masks.append(self.refine(rgb, box, settings, box_strokes))
            seconds.append(time.perf_counter() - start)
        label_map = compose_label_map(rgb.shape[:2], list(boxes), masks, overlap=overlap, ignore_band=ignore_band)
        record = settings.record() | {"overlap": overlap, "ignore_band": ignore_band}
        if strokes is not None:
            record["strokes"] = [[s.to_json() for s in as_strokes(b)] for b in per_box]
        return LabelMapResult(label_map, masks, seconds, record)


def _pack(mask: np.ndarray, box: Box) -> tuple[tuple[int, int, int, int], np.ndarray]:
    return (box.x0, box.y0, box.x1, box.y1), mask[box.y0 : box.y1, box.x0 : box.x1].copy()


def _unpack(packed: tuple[tuple[int, int, int, int], np.ndarray], height: int, width: int) -> np.ndarray:
    (x0, y0, x1, y1), crop = packed
    out = np.zeros((height, width), dtype=bool)
    out[y0:y1, x0:x1] = crop
    return out
