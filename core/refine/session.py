"""Editing one sample: boxes, their refined masks, manual touch-ups, unlimited undo / redo, saving.

The label map shown to a person is derived, never edited directly:

    label map = base map (from disk, or empty)
                with each refined box's class cleared inside its box and its mask painted
                (overlap rule, optional ignore band)
                with manual edits (brush strokes, touch-ups) applied on top.

Manual edits are kept as an override layer, so re-refining a box or adding one keeps them. Every
change pushes a snapshot (compressed) onto the undo stack; undo and redo never recompute anything.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.refine import touchup
from core.refine.labelmap import border_band, paint_order
from core.refine.refiner import BoxRefiner, RefineSettings, as_rgb
from core.types import Box, ClassSet

NO_OVERRIDE = -1


def _compress(array: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(array).tobytes(), 1)


def _decompress(data: bytes, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype=dtype).reshape(shape).copy()


@dataclass(frozen=True)
class BoxEntry:
    """A box and, once refined, its mask inside the box (compressed) and the method used."""

    box: Box
    mask: bytes | None = None
    method: str = ""

    @property
    def refined(self) -> bool:
        return self.mask is not None

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """``H x W bool`` (empty when unrefined)."""
        out = np.zeros((height, width), dtype=bool)
        if self.mask is not None:
            b = self.box
            out[b.y0 : b.y1, b.x0 : b.x1] = _decompress(self.mask, (b.height, b.width), bool)
        return out


@dataclass(frozen=True)
class Snapshot:
    """One state of the document (arrays compressed)."""

    entries: tuple[BoxEntry, ...]
    overrides: bytes  # int16 H x W, NO_OVERRIDE where nothing was edited by hand
    label_map: bytes  # uint8 H x W, the derived map (kept so undo/redo never recompute)
    action: str


@dataclass
class AnnotationSession:
    """The editing state of one sample.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        classes: the dataset's class set.
        boxes: the sample's boxes (unrefined at start).
        base: ``H x W uint8`` label map loaded from disk, or ``None`` for an empty (background) map.
        refiner: shared :class:`BoxRefiner` (its caches make re-refining cheap).
    """

    image: np.ndarray
    classes: ClassSet
    boxes: Sequence[Box] = ()
    base: np.ndarray | None = None
    refiner: BoxRefiner = field(default_factory=BoxRefiner)
    settings: RefineSettings = field(default_factory=RefineSettings)
    overlap: str = "smaller"
    ignore_band: int = 0
    _undo: list[Snapshot] = field(default_factory=list, init=False)
    _redo: list[Snapshot] = field(default_factory=list, init=False)
    _saved_at: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.image = as_rgb(self.image)
        height, width = self.image.shape[:2]
        if self.base is None:
            self.base = np.zeros((height, width), dtype=np.uint8)
        if self.base.shape != (height, width):
            raise InvalidInput(
                f"label map is {self.base.shape[1]}x{self.base.shape[0]} but the image is {width}x{height}"
            )
        self.base = self.base.astype(np.uint8, copy=True)
        entries = tuple(BoxEntry(self._check_box(b)) for b in self.boxes)
        overrides = np.full((height, width), NO_OVERRIDE, dtype=np.int16)
        self._undo = [Snapshot(entries, _compress(overrides), _compress(self.base), "open")]

    # ---- reading the state ---------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def current(self) -> Snapshot:
        return self._undo[-1]

    @property
    def entries(self) -> tuple[BoxEntry, ...]:
        return self.current.entries

    @property
    def label_map(self) -> np.ndarray:
        """The current ``H x W uint8`` label map."""
        return _decompress(self.current.label_map, self.shape, np.uint8)

    @property
    def overrides(self) -> np.ndarray:
        """``H x W int16`` manual edits (``NO_OVERRIDE`` where none)."""
        return _decompress(self.current.overrides, self.shape, np.int16)

    @property
    def can_undo(self) -> bool:
        return len(self._undo) > 1

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history(self) -> list[str]:
        """The actions on the undo stack, oldest first."""
        return [s.action for s in self._undo]

    @property
    def dirty(self) -> bool:
        """True when the state differs from the last save (or from the opened files)."""
        return len(self._undo) - 1 != self._saved_at

    # ---- changing the state --------------------------------------------------------------

    def _check_box(self, box: Box) -> Box:
        self.classes.check_index(box.label)
        if box.label == 0:
            raise InvalidInput(
                f"box ({box.x0}, {box.y0}, {box.x1}, {box.y1}) has class 0 ({self.classes.names[0]}); give it an object class"
            )
        return box.clip(self.shape[1], self.shape[0])

    def _compose(self, entries: Sequence[BoxEntry], overrides: np.ndarray) -> np.ndarray:
        height, width = self.shape
        label_map = self.base.copy()
        refined = [e for e in entries if e.refined]
        for entry in refined:  # a refined box replaces its class (and the old void band) inside the box
            b = entry.box
            region = label_map[b.y0 : b.y1, b.x0 : b.x1]
            region[(region == b.label) | (region == self.classes.ignore_index)] = 0
        for index in paint_order([e.box for e in refined], self.overlap):
            entry = refined[index]
            label_map[entry.full_mask(height, width)] = entry.box.label
        if self.ignore_band > 0 and refined:
            label_map[border_band(label_map, self.ignore_band)] = self.classes.ignore_index
        edited = overrides != NO_OVERRIDE
        label_map[edited] = overrides[edited].astype(np.uint8)
        return label_map

    def _push(self, entries: Sequence[BoxEntry], overrides: np.ndarray, action: str) -> np.ndarray:
        label_map = self._compose(entries, overrides)
        self._undo.append(Snapshot(tuple(entries), _compress(overrides), _compress(label_map), action))
        self._redo.clear()
        return label_map

    def _refined_entry(self, box: Box, settings: RefineSettings) -> BoxEntry:
        mask = self.refiner.refine(self.image, box, settings)
        crop = mask[box.y0 : box.y1, box.x0 : box.x1]
        return BoxEntry(box, _compress(crop), settings.resolved_method)

    def set_boxes(
        self, boxes: Sequence[Box], *, refine: bool = True, settings: RefineSettings | None = None
    ) -> np.ndarray:
        """Replace the box list (after the user drew, moved, resized or deleted boxes).

        Boxes identical to existing ones keep their masks; new or changed boxes are refined when
        ``refine`` is true. Returns the new label map (unchanged state pushes nothing).
        """
        settings = settings or self.settings
        checked = [self._check_box(b) for b in boxes]
        old = {e.box: e for e in self.entries}
        entries = []
        for box in checked:
            entry = old.get(box) or BoxEntry(box)
            if refine and not entry.refined:
                entry = self._refined_entry(box, settings)
            entries.append(entry)
        if tuple(entries) == self.entries:
            return self.label_map
        return self._push(entries, self.overrides, "edit boxes")

    def refine(self, indices: Sequence[int] | None = None, settings: RefineSettings | None = None) -> np.ndarray:
        """(Re)refine the given boxes (all when ``None``) with ``settings`` and return the label map."""
        settings = settings or self.settings
        entries = list(self.entries)
        chosen = range(len(entries)) if indices is None else indices
        for index in chosen:
            if not 0 <= index < len(entries):
                raise InvalidInput(f"no box #{index + 1}; this sample has {len(entries)} boxes")
            entries[index] = self._refined_entry(entries[index].box, settings)
        if not entries:
            raise InvalidInput("there are no boxes to refine: draw a box first")
        what = "all boxes" if indices is None else ", ".join(f"#{i + 1}" for i in chosen)
        return self._push(entries, self.overrides, f"refine {what} ({settings.resolved_method})")

    def set_options(self, *, overlap: str | None = None, ignore_band: int | None = None) -> np.ndarray:
        """Change the overlap rule or ignore band and recompose (an undoable step)."""
        if overlap is not None:
            paint_order([], overlap)  # validates the name
        if ignore_band is not None and not 0 <= ignore_band <= 50:
            raise InvalidInput(f"ignore band must be 0..50 pixels, got {ignore_band}")
        changed = (overlap is not None and overlap != self.overlap) or (
            ignore_band is not None and ignore_band != self.ignore_band
        )
        if not changed:
            return self.label_map
        self.overlap = overlap if overlap is not None else self.overlap
        self.ignore_band = ignore_band if ignore_band is not None else self.ignore_band
        return self._push(
            self.entries, self.overrides, f"options: overlap {self.overlap}, ignore band {self.ignore_band}"
        )

    def _edit(self, edited: np.ndarray, action: str) -> np.ndarray:
        current = self.label_map
        changed = edited != current
        if not changed.any():
            return current
        overrides = self.overrides
        overrides[changed] = edited[changed]
        return self._push(self.entries, overrides, action)

    def brush(self, stroke: np.ndarray, value: int) -> np.ndarray:
        """Paint a stroke (``H x W bool``) with a class index, 0 (erase to background) or the ignore index."""
        if value != self.classes.ignore_index:
            self.classes.check_index(value)
        name = "ignore" if value == self.classes.ignore_index else self.classes.names[value]
        return self._edit(touchup.paint(self.label_map, stroke, value), f"brush {name}")

    def touch_up(self, operation: str, size: int = 5) -> np.ndarray:
        """Apply ``fill_holes``, ``remove_small`` (``size`` = minimum area), ``open`` or ``close``
        (``size`` = kernel diameter)."""
        operations: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "fill_holes": lambda m: touchup.fill_holes(m, ignore_index=self.classes.ignore_index),
            "remove_small": lambda m: touchup.remove_small_blobs(m, size, self.classes.ignore_index),
            "open": lambda m: touchup.open_regions(m, size, self.classes.ignore_index),
            "close": lambda m: touchup.close_regions(m, size, self.classes.ignore_index),
        }
        if operation not in operations:
            raise InvalidInput(f"unknown touch-up {operation!r}; accepted: {', '.join(operations)}")
        return self._edit(operations[operation](self.label_map), operation.replace("_", " "))

    def clear_edits(self) -> np.ndarray:
        """Drop every manual edit (undoable)."""
        overrides = np.full(self.shape, NO_OVERRIDE, dtype=np.int16)
        if np.array_equal(overrides, self.overrides):
            return self.label_map
        return self._push(self.entries, overrides, "clear manual edits")

    def undo(self) -> np.ndarray:
        """Step back; raises :class:`InvalidInput` when there is nothing to undo."""
        if not self.can_undo:
            raise InvalidInput("nothing to undo")
        self._redo.append(self._undo.pop())
        return self.label_map

    def redo(self) -> np.ndarray:
        """Step forward again; raises :class:`InvalidInput` when there is nothing to redo."""
        if not self.can_redo:
            raise InvalidInput("nothing to redo")
        self._undo.append(self._redo.pop())
        return self.label_map

    # ---- saving --------------------------------------------------------------------------

    def save(self, dataset, sample) -> tuple[Path | None, Path | None]:
        """Write the label map (palette PNG) and the boxes (VOC XML or boxes.csv rows), atomically,
        keeping the previous versions in the dataset's history.

        Returns:
            where the previous label map and boxes were kept (``None`` for new files).
        """
        from core.io.dataset import save_sample_boxes, save_sample_label_map

        kept_map = save_sample_label_map(dataset, sample, self.label_map)
        kept_boxes = save_sample_boxes(dataset, sample, [e.box for e in self.entries])
        self._saved_at = len(self._undo) - 1
        return kept_map, kept_boxes

    def with_settings(self, settings: RefineSettings) -> AnnotationSession:
        """The same session using other default refinement settings (state shared)."""
        return replace(self, settings=settings)
