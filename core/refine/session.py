"""Editing one sample: boxes, their refined masks, manual touch-ups, unlimited undo / redo, saving.

The label map shown to a person is derived, never edited directly:

    label map = base map (the saved map; for an image without one, every pixel unknown: 255, or
                background when the person says so)
                with each box the person refined painted in (overlap rule, optional ignore band)
                with manual edits (brush strokes, touch-ups) applied on top.

What nobody touched stays byte-identical: boxes loaded from disk keep the pixels they have in the saved map
(ignore pixels included) until the person asks to refine that box; adding, moving or deleting one box
changes only that box's pixels. A loaded box takes part in the overlap rule with its saved pixels, so a
new larger box drawn over it does not swallow it.

Correction strokes ("object" / "not object" strokes and clicks) belong to a box (:attr:`BoxEntry.strokes`):
:meth:`AnnotationSession.add_correction` re-runs the box's method with all its strokes as hard constraints.
They are part of every snapshot (undo / redo), of drafts, and of the box: re-refining it with another
method applies the same strokes; moving or resizing it keeps the strokes that still fit (object strokes
must stay inside the box).

Manual edits are kept as an override layer, so re-refining a box or adding one keeps them. Every
change pushes a snapshot (compressed) onto the undo stack; undo and redo never recompute anything.
The whole state (undo and redo stacks included) round-trips through :meth:`AnnotationSession.to_draft`
so that unsaved work survives a refresh or a restart.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from core.errors import InvalidInput
from core.refine import touchup
from core.refine.corrections import Stroke, as_strokes, check_strokes
from core.refine.labelmap import border_band, paint_order
from core.refine.methods import METHODS
from core.refine.refiner import BoxRefiner, RefineSettings, as_rgb
from core.types import Box, ClassSet

NO_OVERRIDE = -1
DRAFT_FORMAT = 1
FULL_BOX_SHARE = 0.98  # a mask covering this share of its box is flagged: the cut found no boundary
REST_CHOICES = ("unknown", "background")


def _compress(array: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(array).tobytes(), 1)


def _decompress(data: bytes, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype=dtype).reshape(shape).copy()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class BoxEntry:
    """A box and, once refined, its mask inside the box (compressed).

    Attributes:
        box: the box (half-open, with its class).
        mask: ``box.height x box.width bool`` compressed, or ``None`` while the box is not refined.
        method: the method that made the mask (``kept`` for pixels taken over from the saved map).
        number: the box's stable number in lists (new boxes are numbered after existing ones).
        source: the box as loaded from disk, when this entry derives from one: its saved pixels are
            replaced once the entry is refined (or moved and refined).
        flag: ``""``, ``"empty mask"`` or ``"mask fills the box"``.
        strokes: the box's correction strokes in drawing order (hard constraints of every re-cut).
    """

    box: Box
    mask: bytes | None = None
    method: str = ""
    number: int = 0
    source: Box | None = None
    flag: str = ""
    strokes: tuple[Stroke, ...] = ()

    @property
    def refined(self) -> bool:
        return self.mask is not None

    @property
    def from_disk(self) -> bool:
        """A loaded box nobody changed or refined: its saved pixels stand as they are."""
        return self.mask is None and self.source is not None and self.source == self.box

    def crop(self) -> np.ndarray:
        """``box.height x box.width bool`` (empty when unrefined)."""
        b = self.box
        if self.mask is None:
            return np.zeros((b.height, b.width), dtype=bool)
        return _decompress(self.mask, (b.height, b.width), bool)

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """``H x W bool`` (empty when unrefined)."""
        out = np.zeros((height, width), dtype=bool)
        if self.mask is not None:
            b = self.box
            out[b.y0 : b.y1, b.x0 : b.x1] = self.crop()
        return out


def mask_flag(crop: np.ndarray) -> str:
    """``"empty mask"``, ``"mask fills the box"`` or ``""`` for a box's ``h x w bool`` mask."""
    share = float(crop.mean()) if crop.size else 0.0
    if share == 0.0:
        return "empty mask"
    if share >= FULL_BOX_SHARE:
        return "mask fills the box"
    return ""


@dataclass
class Snapshot:
    """One state of the document (arrays compressed; the derived map is recomputed when absent)."""

    entries: tuple[BoxEntry, ...]
    overrides: bytes  # int16 H x W, NO_OVERRIDE where nothing was edited by hand
    label_map: bytes | None  # uint8 H x W, the derived map (kept so undo/redo never recompute)
    action: str
    rest: str = "unknown"
    overlap: str = "smaller"
    ignore_band: int = 0


@dataclass
class AnnotationSession:
    """The editing state of one sample.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        classes: the dataset's class set.
        boxes: the sample's boxes as saved (unrefined at start; their saved pixels stand).
        base: ``H x W uint8`` label map loaded from disk, or ``None`` for an image without one (then pixels
            no mask covers are unknown, ``classes.ignore_index``, unless ``rest`` is ``background``).
        refiner: shared :class:`BoxRefiner` (its caches make re-refining cheap).
        revision: the store revision the session was opened from (a save names it).
    """

    image: np.ndarray
    classes: ClassSet
    boxes: Sequence[Box] = ()
    base: np.ndarray | None = None
    refiner: BoxRefiner = field(default_factory=BoxRefiner)
    settings: RefineSettings = field(default_factory=RefineSettings)
    overlap: str = "smaller"
    ignore_band: int = 0
    revision: str | None = None
    rest: str = "unknown"
    _undo: list[Snapshot] = field(default_factory=list, init=False)
    _redo: list[Snapshot] = field(default_factory=list, init=False)
    _saved_at: int = field(default=0, init=False)
    focus: int | None = field(default=None, init=False)  # number of the box changed last (lists follow it)

    def __post_init__(self) -> None:
        self.image = as_rgb(self.image)
        height, width = self.image.shape[:2]
        self.labelled = self.base is not None
        if self.base is not None and self.base.shape != (height, width):
            raise InvalidInput(
                f"label map is {self.base.shape[1]}x{self.base.shape[0]} but the image is {width}x{height}"
            )
        if self.rest not in REST_CHOICES:
            raise InvalidInput(f"unknown choice for uncovered pixels {self.rest!r}; accepted: {', '.join(REST_CHOICES)}")
        self._saved_base = None if self.base is None else self.base.astype(np.uint8, copy=True)
        entries = tuple(
            BoxEntry(box, number=n + 1, source=box) for n, box in enumerate(self._check_box(b) for b in self.boxes)
        )
        overrides = np.full((height, width), NO_OVERRIDE, dtype=np.int16)
        base = self._base_for(self.rest)
        self._undo = [Snapshot(entries, _compress(overrides), _compress(base), "open", self.rest, self.overlap,
                               self.ignore_band)]  # fmt: skip

    def _base_for(self, rest: str) -> np.ndarray:
        if self._saved_base is not None:
            return self._saved_base
        value = 0 if rest == "background" else self.classes.ignore_index
        return np.full(self.shape, value, dtype=np.uint8)

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
        snapshot = self.current
        if snapshot.label_map is None:
            snapshot.label_map = _compress(self._compose(snapshot))
        return _decompress(snapshot.label_map, self.shape, np.uint8)

    @property
    def overrides(self) -> np.ndarray:
        """``H x W int16`` manual edits (``NO_OVERRIDE`` where none)."""
        return _decompress(self.current.overrides, self.shape, np.int16)

    @property
    def state_key(self) -> str:
        """A short hash of the current label map (changes whenever the map does)."""
        snapshot = self.current
        if snapshot.label_map is None:
            self.label_map  # noqa: B018 - computes and keeps it
        return hashlib.sha1(snapshot.label_map).hexdigest()[:16]  # type: ignore[arg-type]

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

    def flagged(self) -> list[tuple[int, str]]:
        """``(box number, flag)`` of refined boxes whose mask is empty or fills the whole box."""
        return [(e.number, e.flag) for e in self.entries if e.refined and e.flag]

    # ---- composing -----------------------------------------------------------------------

    def _check_box(self, box: Box) -> Box:
        self.classes.check_index(box.label)
        if box.label == 0:
            raise InvalidInput(
                f"box ({box.x0}, {box.y0}, {box.x1}, {box.y1}) has class 0 ({self.classes.names[0]}); give it an object class"
            )
        return box.clip(self.shape[1], self.shape[0])

    def _compose(self, snapshot: Snapshot) -> np.ndarray:
        base = self._base_for(snapshot.rest)
        label_map = base.copy()
        fill = 0 if (self.labelled or snapshot.rest == "background") else self.classes.ignore_index
        for entry in snapshot.entries:  # a refined loaded box replaces its saved pixels
            if entry.refined and entry.source is not None:
                s = entry.source
                window = label_map[s.y0 : s.y1, s.x0 : s.x1]
                window[base[s.y0 : s.y1, s.x0 : s.x1] == s.label] = fill
        painters = [e for e in snapshot.entries if e.refined or e.from_disk]
        for index in paint_order([e.box for e in painters], snapshot.overlap):
            entry = painters[index]
            b = entry.box
            window = label_map[b.y0 : b.y1, b.x0 : b.x1]
            if entry.refined:
                window[entry.crop()] = b.label
            else:  # its saved pixels win over the boxes it beats in the overlap rule
                window[base[b.y0 : b.y1, b.x0 : b.x1] == b.label] = b.label
        refined = [e for e in snapshot.entries if e.refined]
        if snapshot.ignore_band > 0 and refined:
            label_map[self._band_near(label_map, refined, snapshot.ignore_band)] = self.classes.ignore_index
        overrides = _decompress(snapshot.overrides, self.shape, np.int16)
        edited = overrides != NO_OVERRIDE
        label_map[edited] = overrides[edited].astype(np.uint8)
        return label_map

    def _band_near(self, label_map: np.ndarray, refined: Sequence[BoxEntry], width: int) -> np.ndarray:
        """The ignore band on class borders, only around the refined masks (untouched pixels stay)."""
        import cv2

        height, w = self.shape
        near = np.zeros((height, w), np.uint8)
        for entry in refined:
            near[entry.full_mask(height, w)] = 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
        return border_band(label_map, width) & (cv2.dilate(near, kernel) > 0)

    def _push(self, entries: Sequence[BoxEntry], overrides: np.ndarray | bytes, action: str, **options) -> np.ndarray:
        """Push a new state; ``overrides`` as an array, or the compressed bytes of an unchanged layer."""
        current = self.current
        packed = overrides if isinstance(overrides, bytes) else _compress(overrides)
        snapshot = Snapshot(tuple(entries), packed, None, action,
                            options.get("rest", current.rest), options.get("overlap", current.overlap),
                            options.get("ignore_band", current.ignore_band))  # fmt: skip
        label_map = self._compose(snapshot)
        snapshot.label_map = _compress(label_map)
        self._undo.append(snapshot)
        self._redo.clear()
        return label_map

    def _refined_entry(self, entry: BoxEntry, box: Box, settings: RefineSettings) -> BoxEntry:
        if entry.strokes:
            mask = self.refiner.refine(self.image, box, settings, entry.strokes)
        else:  # (refiners without corrections, such as test doubles, take three arguments)
            mask = self.refiner.refine(self.image, box, settings)
        crop = mask[box.y0 : box.y1, box.x0 : box.x1]
        return replace(entry, box=box, mask=_compress(crop), method=settings.resolved_method, flag=mask_flag(crop))

    # ---- changing the state --------------------------------------------------------------

    def set_boxes(
        self, boxes: Sequence[Box], *, refine: bool = True, settings: RefineSettings | None = None
    ) -> np.ndarray:
        """Replace the box list (after the user drew, moved, resized, relabelled or deleted boxes).

        Boxes identical to existing ones keep their entries. A box that differs from the existing one at
        the same place in the list only in its class is relabelled (its mask kept); one that moved or
        changed size is refined again when ``refine`` is true. New boxes are refined when ``refine`` is
        true and numbered after the existing ones. Returns the new label map (an unchanged state pushes
        nothing).
        """
        settings = settings or self.settings
        checked = [self._check_box(b) for b in boxes]
        entries = list(self._match(checked))
        next_number = max((e.number for e in self.entries), default=0) + 1
        for i, (box, previous) in enumerate(zip(checked, entries, strict=True)):
            if previous is not None and previous.box == box:
                continue
            if previous is not None and _same_place(previous.box, box):
                entries[i] = self._relabelled(previous, box.label)
                self.focus = previous.number
                continue
            entry = previous or BoxEntry(box, number=next_number)
            if previous is None:
                next_number += 1
            entry = replace(entry, box=box, mask=None, method="", flag="", strokes=_strokes_fitting(entry.strokes, box))
            entries[i] = self._refined_entry(entry, box, settings) if refine else entry
            self.focus = entry.number
        if tuple(entries) == self.entries:
            return self.label_map
        return self._push(entries, self.current.overrides, "edit boxes")

    def _match(self, boxes: Sequence[Box]) -> list[BoxEntry | None]:
        """The existing entry each box continues: equal boxes first; then, when as many boxes as entries are
        left unmatched, pairs in list order (a move, resize or class change); otherwise none (new boxes)."""
        old = list(self.entries)
        used = [False] * len(old)
        matched: list[BoxEntry | None] = [None] * len(boxes)
        for i, box in enumerate(boxes):
            for j, entry in enumerate(old):
                if not used[j] and entry.box == box:
                    matched[i], used[j] = entry, True
                    break
        free_boxes = [i for i, m in enumerate(matched) if m is None]
        free_entries = [j for j, u in enumerate(used) if not u]
        if free_boxes and len(free_boxes) == len(free_entries):
            for i, j in zip(free_boxes, free_entries, strict=True):
                matched[i] = old[j]
        return matched

    def _relabelled(self, entry: BoxEntry, label: int) -> BoxEntry:
        """The entry with another class; a loaded box takes its saved pixels along to the new class."""
        box = entry.box.with_label(label)
        if entry.refined or entry.source is None:
            return replace(entry, box=box)
        saved = self._base_for(self.current.rest)[entry.box.y0 : entry.box.y1, entry.box.x0 : entry.box.x1]
        crop = saved == entry.box.label
        return replace(entry, box=box, mask=_compress(crop), method="kept", flag=mask_flag(crop))

    def set_class(self, number: int, label: int) -> np.ndarray:
        """Give box ``number`` (its number in the box list) another class; its mask is kept."""
        self.classes.check_index(label)
        if label == 0:
            raise InvalidInput(f"class 0 ({self.classes.names[0]}) is not an object class; pick another")
        entries = list(self.entries)
        index = self._index_of(number)
        if entries[index].box.label == label:
            return self.label_map
        entries[index] = self._relabelled(entries[index], label)
        self.focus = int(number)
        return self._push(entries, self.current.overrides, f"class of #{number} -> {self.classes.names[label]}")

    def _index_of(self, number: int) -> int:
        for index, entry in enumerate(self.entries):
            if entry.number == int(number):
                return index
        numbers = ", ".join(f"#{e.number}" for e in self.entries) or "none"
        raise InvalidInput(f"no box #{number}; this sample's boxes: {numbers}")

    def refine(self, numbers: Sequence[int] | None = None, settings: RefineSettings | None = None) -> np.ndarray:
        """(Re)refine the boxes with these numbers (all when ``None``) with ``settings``; return the map."""
        settings = settings or self.settings
        entries = list(self.entries)
        if not entries:
            raise InvalidInput("there are no boxes to refine: draw a box first")
        chosen = range(len(entries)) if numbers is None else [self._index_of(n) for n in numbers]
        for index in chosen:
            entries[index] = self._refined_entry(entries[index], entries[index].box, settings)
        if numbers is not None and numbers:
            self.focus = int(numbers[-1])
        what = "all boxes" if numbers is None else ", ".join(f"#{n}" for n in numbers)
        return self._push(entries, self.current.overrides, f"refine {what} ({settings.resolved_method})")

    def _settings_for(self, entry: BoxEntry) -> RefineSettings:
        """The box's own method (the one that made its mask) with the session's parameters."""
        if entry.method in METHODS and entry.method != self.settings.resolved_method:
            return replace(self.settings, method=entry.method)
        return self.settings

    def strokes_of(self, number: int) -> tuple[Stroke, ...]:
        """Box ``number``'s correction strokes, in drawing order."""
        return self.entries[self._index_of(number)].strokes

    def box_at(self, x: float, y: float) -> int | None:
        """The number of the smallest box holding pixel ``(x, y)`` (where a stroke drawn there belongs), or
        ``None`` when no box does."""
        holding = [e for e in self.entries if e.box.x0 <= x < e.box.x1 and e.box.y0 <= y < e.box.y1]
        return min(holding, key=lambda e: (e.box.area, e.number)).number if holding else None

    def add_correction(
        self, number: int, stroke: Stroke, positive: bool | None = None, *, settings: RefineSettings | None = None
    ) -> np.ndarray:
        """Add an "object" / "not object" stroke (or click) to box ``number`` and re-cut the box with all its
        strokes as hard constraints (an undoable step); return the new label map.

        Args:
            stroke: the stroke in image pixel coordinates (see :class:`Stroke`; ``Stroke.click(x, y, positive)``
                for a click).
            positive: overrides the stroke's own kind when given.
            settings: the method to re-cut with; default: the method that made the box's mask (the session's
                default method for a box not refined yet), with the session's parameters.

        Raises:
            InvalidInput: no such box, or an object stroke that leaves the box (the message names both).
        """
        if not isinstance(stroke, Stroke):
            got = type(stroke).__name__
            raise InvalidInput(f"a correction is a Stroke (Stroke.click(x, y) for a click), got {got}")
        if positive is not None:
            stroke = replace(stroke, positive=bool(positive))
        index = self._index_of(number)
        entries = list(self.entries)
        entry = entries[index]
        strokes = entry.strokes + (stroke,)
        height, width = self.shape
        try:
            check_strokes(strokes, entry.box, height, width)
        except InvalidInput as error:
            raise InvalidInput(f"box #{number}: {error}") from None
        settings = settings or self._settings_for(entry)
        entries[index] = self._refined_entry(replace(entry, strokes=strokes), entry.box, settings)
        self.focus = int(number)
        shape = "click" if len(stroke.points) == 1 else "stroke"
        return self._push(entries, self.current.overrides,
                          f"{stroke.kind} {shape} on #{number} ({settings.resolved_method})")  # fmt: skip

    def clear_corrections(self, number: int, *, settings: RefineSettings | None = None) -> np.ndarray:
        """Drop box ``number``'s correction strokes and re-cut it from the box alone (undoable)."""
        index = self._index_of(number)
        entries = list(self.entries)
        entry = entries[index]
        if not entry.strokes:
            return self.label_map
        settings = settings or self._settings_for(entry)
        entries[index] = self._refined_entry(replace(entry, strokes=()), entry.box, settings)
        self.focus = int(number)
        return self._push(entries, self.current.overrides, f"clear corrections of #{number}")

    def set_options(
        self, *, overlap: str | None = None, ignore_band: int | None = None, rest: str | None = None
    ) -> np.ndarray:
        """Change the overlap rule, the ignore band or what uncovered pixels of an unlabelled image are
        (``unknown`` or ``background``), and recompose (an undoable step)."""
        current = self.current
        if overlap is not None:
            paint_order([], overlap)  # validates the name
        if ignore_band is not None and not 0 <= ignore_band <= 50:
            raise InvalidInput(f"ignore band must be 0..50 pixels, got {ignore_band}")
        if rest is not None and rest not in REST_CHOICES:
            raise InvalidInput(f"unknown choice for uncovered pixels {rest!r}; accepted: {', '.join(REST_CHOICES)}")
        changes = {k: v for k, v in (("overlap", overlap), ("ignore_band", ignore_band), ("rest", rest))
                   if v is not None and v != getattr(current, k)}  # fmt: skip
        if not changes:
            return self.label_map
        described = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in changes.items())
        self.overlap = changes.get("overlap", self.overlap)
        self.ignore_band = changes.get("ignore_band", self.ignore_band)
        self.rest = changes.get("rest", self.rest)
        return self._push(self.entries, self.current.overrides, f"options: {described}", **changes)

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
        self._sync_options()
        return self.label_map

    def redo(self) -> np.ndarray:
        """Step forward again; raises :class:`InvalidInput` when there is nothing to redo."""
        if not self.can_redo:
            raise InvalidInput("nothing to redo")
        self._undo.append(self._redo.pop())
        self._sync_options()
        return self.label_map

    def _sync_options(self) -> None:
        current = self.current
        self.overlap, self.ignore_band, self.rest = current.overlap, current.ignore_band, current.rest

    # ---- saving --------------------------------------------------------------------------

    def save_payload(self) -> tuple[np.ndarray | None, list[Box]]:
        """What a save writes: the label map (``None`` when nothing would change an image that has no map
        yet) and the boxes."""
        boxes = [e.box for e in self.entries]
        label_map = self.label_map
        unchanged_empty = not self.labelled and not (label_map != self._base_for(self.current.rest)).any()
        return (None if unchanged_empty else label_map), boxes

    def mark_saved(self, revision: str | None) -> None:
        """Record that the current state is what is on disk now (at ``revision``)."""
        self._saved_at = len(self._undo) - 1
        self.revision = revision

    # ---- drafts --------------------------------------------------------------------------

    def to_draft(self) -> dict:
        """The whole editing state as JSON-ready data (masks stored once, derived maps left out)."""
        masks: dict[str, str] = {}

        def entry_doc(entry: BoxEntry) -> dict:
            key = None
            if entry.mask is not None:
                key = hashlib.sha1(entry.mask).hexdigest()[:20]
                masks.setdefault(key, _b64(entry.mask))
            src = entry.source
            doc = {"box": [entry.box.x0, entry.box.y0, entry.box.x1, entry.box.y1, entry.box.label], "mask": key,
                   "method": entry.method, "number": entry.number, "flag": entry.flag,
                   "source": None if src is None else [src.x0, src.y0, src.x1, src.y1, src.label]}  # fmt: skip
            if entry.strokes:
                doc["strokes"] = [stroke.to_json() for stroke in entry.strokes]
            return doc

        def snapshot_doc(s: Snapshot) -> dict:
            return {"entries": [entry_doc(e) for e in s.entries], "overrides": _b64(s.overrides), "action": s.action,
                    "rest": s.rest, "overlap": s.overlap, "ignore_band": s.ignore_band}  # fmt: skip

        return {"format": DRAFT_FORMAT, "shape": list(self.shape), "revision": self.revision,
                "saved_at": self._saved_at, "labelled": self.labelled, "masks": masks,
                "undo": [snapshot_doc(s) for s in self._undo], "redo": [snapshot_doc(s) for s in self._redo]}  # fmt: skip

    def restore_draft(self, doc: dict) -> None:
        """Take over the state saved by :meth:`to_draft` (the image and base must be the same).

        Raises:
            InvalidInput: the draft is of another format or image size.
        """
        if doc.get("format") != DRAFT_FORMAT or list(doc.get("shape", [])) != list(self.shape):
            raise InvalidInput(f"the draft does not fit this image ({doc.get('shape')} vs {list(self.shape)})")
        masks = {k: base64.b64decode(v) for k, v in doc.get("masks", {}).items()}

        def entry_of(d: dict) -> BoxEntry:
            src = d.get("source")
            return BoxEntry(Box(*d["box"]), masks[d["mask"]] if d.get("mask") else None, d.get("method", ""),
                            int(d.get("number", 0)), Box(*src) if src else None, d.get("flag", ""),
                            as_strokes(d.get("strokes", [])))  # fmt: skip

        def snapshot_of(d: dict) -> Snapshot:
            return Snapshot(tuple(entry_of(e) for e in d["entries"]), base64.b64decode(d["overrides"]), None,
                            d["action"], d.get("rest", "unknown"), d.get("overlap", "smaller"),
                            int(d.get("ignore_band", 0)))  # fmt: skip

        undo = [snapshot_of(s) for s in doc["undo"]]
        if not undo:
            raise InvalidInput("the draft holds no state")
        self._undo, self._redo = undo, [snapshot_of(s) for s in doc.get("redo", [])]
        self._saved_at = int(doc.get("saved_at", 0))
        self.revision = doc.get("revision")
        self._sync_options()

    def with_settings(self, settings: RefineSettings) -> AnnotationSession:
        """The same session using other default refinement settings (state shared)."""
        return replace(self, settings=settings)


def _strokes_fitting(strokes: tuple[Stroke, ...], box: Box) -> tuple[Stroke, ...]:
    """The strokes a moved or resized box keeps: every not-object stroke, and the object strokes whose points
    all lie inside the new box."""
    return tuple(s for s in strokes if not s.positive or all(box.x0 <= x < box.x1 and box.y0 <= y < box.y1
                                                             for x, y in s.points))  # fmt: skip


def _same_place(a: Box, b: Box) -> bool:
    return (a.x0, a.y0, a.x1, a.y1) == (b.x0, b.y0, b.x1, b.y1)
