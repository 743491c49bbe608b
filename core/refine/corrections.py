"""Correction strokes and clicks: hard "object" / "not object" constraints on one box's mask.

A :class:`Stroke` is a polyline (one point for a click) drawn with a round brush of ``radius`` pixels,
either positive ("object") or negative ("not object"). A box's strokes are kept in the order they were
drawn; :func:`rasterize_strokes` turns them into two ``H x W bool`` masks, the later stroke winning where
two overlap (a person correcting their own correction).

Every refinement method re-cuts with these pixels as hard constraints (see :class:`BoxRefiner.refine`),
and afterwards pixels under an object stroke are object and pixels under a not-object stroke are not,
whatever the method did.

The rule for strokes outside the box (a mask never leaves its box):

- an **object** stroke whose centre line leaves the box is refused with :class:`InvalidInput` naming
  the stroke and the box (enlarge the box instead); a round brush footprint that only overhangs the
  box edge is clipped to the box;
- a **not-object** stroke may lie anywhere on the image: outside the box it holds trivially, and its
  colours still teach the background colour model of the methods that have one.

A stroke with no pixel on the image is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidInput
from core.types import Box

DEFAULT_RADIUS = 3
MAX_RADIUS = 200
MAX_POINTS = 10_000


@dataclass(frozen=True)
class Stroke:
    """One correction: a polyline of pixel positions drawn with a round brush.

    Attributes:
        points: ``(x, y)`` pixel positions (column, row) in image coordinates, in drawing order; one point
            for a click. Real values are rounded to the nearest pixel.
        positive: ``True`` for "object", ``False`` for "not object".
        radius: brush radius in pixels (0: a one-pixel line), ``0..200``.

    Raises:
        InvalidInput: no points, a non-finite coordinate, more than 10000 points, or a radius out of range.
    """

    points: tuple[tuple[int, int], ...]
    positive: bool = True
    radius: int = DEFAULT_RADIUS

    def __post_init__(self) -> None:
        raw = list(self.points) if not isinstance(self.points, np.ndarray) else self.points.tolist()
        if not raw:
            raise InvalidInput("a stroke needs at least one (x, y) point")
        if len(raw) > MAX_POINTS:
            raise InvalidInput(f"a stroke holds {len(raw)} points; at most {MAX_POINTS} are accepted")
        points = []
        for point in raw:
            try:
                x, y = (float(v) for v in point)
            except (TypeError, ValueError):
                raise InvalidInput(f"stroke points must be (x, y) number pairs, got {point!r}") from None
            if not (math.isfinite(x) and math.isfinite(y)):
                raise InvalidInput(f"stroke point ({x}, {y}) is not finite")
            points.append((int(round(x)), int(round(y))))
        if (
            isinstance(self.radius, bool)
            or not isinstance(self.radius, (int, np.integer))
            or not 0 <= self.radius <= MAX_RADIUS
        ):
            raise InvalidInput(f"stroke radius must be an integer 0..{MAX_RADIUS} pixels, got {self.radius!r}")
        object.__setattr__(self, "points", tuple(points))
        object.__setattr__(self, "positive", bool(self.positive))
        object.__setattr__(self, "radius", int(self.radius))

    @classmethod
    def click(cls, x: float, y: float, positive: bool = True, radius: int = DEFAULT_RADIUS) -> Stroke:
        """A single click at pixel ``(x, y)``: a disk of ``radius``."""
        return cls(((x, y),), positive, radius)

    @property
    def kind(self) -> str:
        return "object" if self.positive else "not object"

    def describe(self) -> str:
        """A short human description: kind, first point, length."""
        x, y = self.points[0]
        shape = "click" if len(self.points) == 1 else f"stroke of {len(self.points)} points"
        return f"{self.kind} {shape} at ({x}, {y})"

    def bounds(self) -> tuple[int, int, int, int]:
        """Half-open ``(x0, y0, x1, y1)`` of the stroke's footprint (may reach outside the image)."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        r = self.radius
        return min(xs) - r, min(ys) - r, max(xs) + r + 1, max(ys) + r + 1

    def rasterize(self, height: int, width: int) -> np.ndarray:
        """The footprint as an ``H x W bool`` mask (clipped to the image)."""
        import cv2

        out = np.zeros((height, width), dtype=bool)
        x0, y0, x1, y1 = self.bounds()
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx0 >= cx1 or cy0 >= cy1:
            return out
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = np.array([(x - x0, y - y0) for x, y in self.points], np.int32)
        if len(pts) == 1:
            local[pts[0, 1], pts[0, 0]] = 1
        else:
            cv2.polylines(local, [pts.reshape(-1, 1, 2)], False, 1, 1, cv2.LINE_8)
        if self.radius > 0:
            size = 2 * self.radius + 1
            local = cv2.dilate(local, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
        out[cy0:cy1, cx0:cx1] = local[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > 0
        return out

    def sample_points(self, count: int = 8) -> list[tuple[int, int]]:
        """At most ``count`` points spread evenly along the polyline (its vertices when fewer), for
        point-prompt models."""
        if len(self.points) <= count:
            return list(self.points)
        pts = np.array(self.points, np.float64)
        seg = np.sqrt(((pts[1:] - pts[:-1]) ** 2).sum(axis=1))
        along = np.concatenate([[0.0], np.cumsum(seg)])
        if along[-1] == 0:
            return [self.points[0]]
        chosen = []
        for target in np.linspace(0, along[-1], count):
            i = int(np.clip(np.searchsorted(along, target, side="right") - 1, 0, len(pts) - 2))
            t = 0.0 if seg[i] == 0 else (target - along[i]) / seg[i]
            x, y = pts[i] + t * (pts[i + 1] - pts[i])
            chosen.append((int(round(x)), int(round(y))))
        return list(dict.fromkeys(chosen))

    def to_json(self) -> dict:
        return {"points": [list(p) for p in self.points], "positive": self.positive, "radius": self.radius}

    @classmethod
    def from_json(cls, doc: dict) -> Stroke:
        if not isinstance(doc, dict) or "points" not in doc:
            raise InvalidInput(f"a stroke record needs 'points' (and 'positive', 'radius'), got {doc!r}")
        return cls(tuple(tuple(p) for p in doc["points"]), bool(doc.get("positive", True)),
                   int(doc.get("radius", DEFAULT_RADIUS)))  # fmt: skip


Strokes = tuple[Stroke, ...]


def as_strokes(strokes: Stroke | Iterable[Stroke | dict] | None) -> Strokes:
    """Normalise ``None``, one stroke, or a sequence of strokes / stroke records to a tuple of strokes."""
    if strokes is None:
        return ()
    if isinstance(strokes, Stroke):
        return (strokes,)
    out = []
    for item in strokes:
        if isinstance(item, Stroke):
            out.append(item)
        elif isinstance(item, dict):
            out.append(Stroke.from_json(item))
        else:
            raise InvalidInput(f"expected Stroke objects or stroke records, got {type(item).__name__}")
    return tuple(out)


def check_strokes(strokes: Sequence[Stroke], box: Box, height: int, width: int) -> Strokes:
    """Validate a box's strokes against the rule for strokes outside the box (module docstring).

    Args:
        box: the box, clipped to the image.

    Raises:
        InvalidInput: an object stroke whose centre line leaves the box, or a stroke with no pixel on the
            ``width x height`` image; the message names the stroke (1-based, in drawing order) and the box.
    """
    strokes = as_strokes(strokes)
    corners = f"box ({box.x0}, {box.y0}, {box.x1}, {box.y1})"
    for number, stroke in enumerate(strokes, 1):
        x0, y0, x1, y1 = stroke.bounds()
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise InvalidInput(f"stroke {number} ({stroke.describe()}) lies outside the {width}x{height} image")
        if stroke.positive:
            outside = [(x, y) for x, y in stroke.points if not (box.x0 <= x < box.x1 and box.y0 <= y < box.y1)]
            if outside:
                x, y = outside[0]
                raise InvalidInput(
                    f"stroke {number} ({stroke.describe()}) reaches outside {corners} at ({x}, {y}): a box's mask "
                    "stays inside its box, so an object stroke must be drawn inside it; enlarge the box first"
                )
    return strokes


def rasterize_strokes(strokes: Sequence[Stroke], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels strokes declare object and not object.

    Args:
        strokes: in drawing order; where two overlap, the later one wins.

    Returns:
        ``(object, not_object)``: two disjoint ``H x W bool`` masks.
    """
    obj = np.zeros((height, width), dtype=bool)
    not_obj = np.zeros((height, width), dtype=bool)
    for stroke in as_strokes(strokes):
        footprint = stroke.rasterize(height, width)
        if stroke.positive:
            obj |= footprint
            not_obj &= ~footprint
        else:
            not_obj |= footprint
            obj &= ~footprint
    return obj, not_obj


def enforce(mask: np.ndarray, obj: np.ndarray, not_obj: np.ndarray, box: Box) -> np.ndarray:
    """The final step of every method: ``mask`` (``H x W bool``) with the object pixels inside ``box`` set
    and the not-object pixels cleared (a new array)."""
    out = mask | (obj & box.mask(*mask.shape))
    out &= ~not_obj
    return out
