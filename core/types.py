"""The data model: boxes and class sets, plus the array conventions (samples and datasets: core.store).

Array conventions used everywhere in ``core``:

- images are ``H x W x 3 uint8`` RGB arrays;
- masks are ``H x W bool``; soft masks are ``H x W float32`` in ``[0, 1]``;
- label maps are ``H x W uint8`` class indices, with ``255`` meaning ignore/void;
- boxes are half-open pixel rectangles ``[x0, x1) x [y0, y1)`` with a class index.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput

IGNORE_INDEX = 255


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels, half-open: it covers columns ``x0 .. x1-1`` and rows
    ``y0 .. y1-1``, with the class index ``label``.

    Raises:
        InvalidInput: when a corner is not finite or the box is empty (``x1 <= x0`` or ``y1 <= y0``).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    label: int = 0

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, (int, np.integer)) for v in values):
            raise InvalidInput(f"box corners must be integers, got {values}; use Box.from_floats for real values")
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise InvalidInput(
                f"empty box (x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1}): "
                "a box needs x1 > x0 and y1 > y0 (corners are half-open)"
            )
        if not (0 <= int(self.label) <= 254):
            raise InvalidInput(f"box class index {self.label} is out of range; accepted: 0..254 (255 is ignore)")
        for name in ("x0", "y0", "x1", "y1", "label"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def from_floats(cls, x0: float, y0: float, x1: float, y1: float, label: int = 0) -> Box:
        """Build from real-valued half-open corners, rounding outwards to whole pixels."""
        values = (x0, y0, x1, y1)
        if not all(math.isfinite(float(v)) for v in values):
            raise InvalidInput(f"box corners must be finite numbers, got {values}")
        return cls(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1), label)

    @classmethod
    def from_inclusive(cls, x0: float, y0: float, x1: float, y1: float, label: int = 0) -> Box:
        """Build from inclusive corners (VOC XML, ``boxes.csv``): ``x1``/``y1`` is the last pixel."""
        return cls.from_floats(x0, y0, float(x1) + 1, float(y1) + 1, label)

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float, label: int = 0) -> Box:
        """Build from COCO's ``[x, y, width, height]``."""
        return cls.from_floats(x, y, float(x) + float(w), float(y) + float(h), label)

    def to_inclusive(self) -> tuple[int, int, int, int]:
        """Corners with ``x1``/``y1`` naming the last covered pixel (VOC XML convention)."""
        return self.x0, self.y0, self.x1 - 1, self.y1 - 1

    def to_xywh(self) -> tuple[int, int, int, int]:
        """COCO's ``(x, y, width, height)``."""
        return self.x0, self.y0, self.width, self.height

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def with_label(self, label: int) -> Box:
        return Box(self.x0, self.y0, self.x1, self.y1, label)

    def clip(self, width: int, height: int) -> Box:
        """The part of the box inside a ``width x height`` image.

        Raises:
            InvalidInput: when the box lies entirely outside the image.
        """
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x1, width), min(self.y1, height)
        if x1 <= x0 or y1 <= y0:
            raise InvalidInput(
                f"box ({self.x0}, {self.y0}, {self.x1}, {self.y1}) lies outside the {width}x{height} image; "
                f"accepted: boxes overlapping x in [0, {width}) and y in [0, {height})"
            )
        return Box(x0, y0, x1, y1, self.label)

    def mask(self, height: int, width: int) -> np.ndarray:
        """The box as an ``H x W bool`` mask (clipped to the image)."""
        clipped = self.clip(width, height)
        out = np.zeros((height, width), dtype=bool)
        out[clipped.y0 : clipped.y1, clipped.x0 : clipped.x1] = True
        return out


# --------------------------------------------------------------------------------------------
# Class sets
# --------------------------------------------------------------------------------------------


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC bit-interleaved colour map, ``n x 3 uint8`` (index 255 is ``(224, 224, 192)``)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CITYSCAPES_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# ADE20K's 150 SceneParsing classes in training-id order (as used by segmentation ControlNets).
ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

# ADE20K colours as used by the segmentation ControlNets (the same table as controlnet-aux's
# ``controlnet_aux.util.ade_palette()``, which cannot be imported here without importing torch).
ADE20K_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip

# Class roles: "stuff" classes are amorphous regions (sky, road, wall, floor, ...) that are never cut out as
# objects by default; every other class is a "thing". Cityscapes: the 11 non-instance train ids of its
# panoptic task (road ... sky). ADE20K: the 50 classes marked ``isthing: 0`` in the ADE20K-150 panoptic split
# (as registered by Mask2Former / detectron2). VOC: background, and diningtable: VOC's guidelines label
# everything on a table as table, so its regions are table tops (a surface things stand on, often filling
# the frame), like COCO panoptic's stuff class "table-merged"; mark it a thing again in the studio if
# your tables are whole objects.
ROLES = ("thing", "stuff")
CITYSCAPES_STUFF = tuple(range(11))
ADE20K_STUFF = (0, 1, 2, 3, 4, 5, 6, 9, 11, 13, 16, 17, 21, 25, 26, 28, 29, 34, 40, 46, 48, 51, 52, 54, 59, 60, 61, 63,
                68, 77, 79, 84, 91, 94, 96, 99, 100, 101, 105, 106, 109, 113, 114, 117, 122, 128, 131, 140, 141, 145)  # fmt: skip
VOC_STUFF = (0, 11)

BUILTIN_CLASS_SETS = ("voc", "cityscapes", "ade20k")
_PALETTES: dict[tuple, np.ndarray] = {}  # palettes by class set content (building one takes a Python loop)


@dataclass(frozen=True)
class ClassSet:
    """Names and colours of a dataset's classes.

    Attributes:
        name: a short identifier (``"voc"``, ``"cityscapes"``, ``"ade20k"`` or the dataset's own).
        names: class names; the class index is the position in this tuple (at most 255 classes).
        colors: ``N x 3 uint8`` RGB colours, one row per class.
        ignore_index: the label value meaning ignore/void (255 by VOC convention).
        ignore_color: the colour drawn for ignored pixels.
        stuff: indices of "stuff" classes (sky, road, wall, ...: regions, never cut out as objects by
            default); every other class is a "thing". Not part of equality (roles do not change what a
            label value means).
    """

    name: str
    names: tuple[str, ...]
    colors: np.ndarray = field(repr=False, compare=False)
    ignore_index: int = IGNORE_INDEX
    ignore_color: tuple[int, int, int] = (224, 224, 192)
    stuff: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        object.__setattr__(self, "names", names)
        if not 1 <= len(names) <= 255:
            raise InvalidInput(f"a class set needs 1 to 255 classes, got {len(names)}")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise InvalidInput(f"class names must be unique; repeated: {', '.join(dupes)}")
        colors = np.asarray(self.colors)
        if colors.shape != (len(names), 3):
            raise InvalidInput(f"class colours must be {len(names)} x 3 RGB triples, got shape {colors.shape}")
        if colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise InvalidInput("class colours must be RGB values in 0..255")
        object.__setattr__(self, "colors", colors.astype(np.uint8))
        if not (len(names) <= self.ignore_index <= 255):
            raise InvalidInput(
                f"ignore index {self.ignore_index} collides with a class index; accepted: {len(names)}..255"
            )
        stuff = tuple(sorted({int(i) for i in self.stuff}))
        if any(not 0 <= i < len(names) for i in stuff):
            raise InvalidInput(f"stuff classes must be class indices 0..{len(names) - 1}, got {list(stuff)}")
        object.__setattr__(self, "stuff", stuff)

    def role(self, index: int) -> str:
        """``"stuff"`` or ``"thing"`` for a class index."""
        self.check_index(index)
        return "stuff" if index in self.stuff else "thing"

    def with_stuff(self, stuff) -> ClassSet:
        """The same set with other stuff classes (indices or names)."""
        indices = [self.index_of(s) if isinstance(s, str) else int(s) for s in stuff]
        return ClassSet(self.name, self.names, self.colors, self.ignore_index, self.ignore_color, tuple(indices))

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassSet):
            return NotImplemented
        return (
            self.names == other.names
            and self.ignore_index == other.ignore_index
            and np.array_equal(self.colors, other.colors)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.names, self.ignore_index))

    def index_of(self, name: str) -> int:
        """The class index for ``name`` (case-insensitive).

        Raises:
            InvalidInput: naming the unknown class and listing the known ones.
        """
        lowered = [n.lower() for n in self.names]
        key = name.strip().lower()
        if key not in lowered:
            raise InvalidInput(f"unknown class {name!r} in class set {self.name!r}; known: {', '.join(self.names)}")
        return lowered.index(key)

    def color_of(self, index: int) -> tuple[int, int, int]:
        """The RGB colour of a class index (the ignore colour for the ignore index)."""
        if index == self.ignore_index:
            return self.ignore_color
        self.check_index(index)
        return tuple(int(c) for c in self.colors[index])  # type: ignore[return-value]

    def check_index(self, index: int) -> None:
        """Raise :class:`InvalidInput` unless ``index`` is a class of this set."""
        if not 0 <= int(index) < len(self.names):
            raise InvalidInput(
                f"unknown class index {index} for class set {self.name!r}; accepted: 0..{len(self.names) - 1}"
            )

    def palette(self) -> np.ndarray:
        """A full 256-entry ``256 x 3 uint8`` palette for palette PNGs: the class colours first, the
        ignore colour at the ignore index, VOC's colour map elsewhere."""
        key = (self.names, self.colors.tobytes(), self.ignore_index, self.ignore_color)
        cached = _PALETTES.get(key)
        if cached is None:
            cached = voc_colormap(256)
            cached[: len(self.names)] = self.colors
            cached[self.ignore_index] = self.ignore_color
            cached.setflags(write=False)
            _PALETTES[key] = cached
        return cached.copy()

    def to_json(self) -> dict:
        """The ``classes.json`` document for this set."""
        return {
            "name": self.name,
            "ignore_index": self.ignore_index,
            "ignore_color": list(self.ignore_color),
            "classes": [
                {"id": i, "name": n, "color": [int(c) for c in self.colors[i]], **({"role": "stuff"} if i in self.stuff else {})}
                for i, n in enumerate(self.names)
            ],
        }

    @classmethod
    def from_json(cls, doc: dict | list, default_name: str = "custom") -> ClassSet:
        """Parse a ``classes.json`` document.

        Accepted forms: ``{"classes": [{"id", "name", "color", "role"?}, ...], "ignore_index"?, "name"?}`` with
        ids ``0..N-1`` (any order), or a plain list of class names (VOC colours are used). ``role`` is
        ``"thing"`` (the default) or ``"stuff"``; ``"isthing": 0`` (detectron2's spelling) also marks stuff.
        """
        if isinstance(doc, list):
            names = [str(n) for n in doc]
            return cls(default_name, tuple(names), voc_colormap(256)[: len(names)])
        if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list):
            raise InvalidInput('classes.json must be a list of names or an object with a "classes" list')
        entries = doc["classes"]
        by_id: dict[int, dict] = {}
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or "name" not in entry:
                raise InvalidInput(f'classes.json entry {position} must be an object with at least a "name"')
            idx = int(entry.get("id", position))
            if idx in by_id:
                raise InvalidInput(f"classes.json gives class id {idx} twice")
            by_id[idx] = entry
        if sorted(by_id) != list(range(len(by_id))):
            raise InvalidInput(f"classes.json ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}")
        fallback = voc_colormap(256)
        names = tuple(str(by_id[i]["name"]) for i in range(len(by_id)))
        colors = np.array([by_id[i].get("color", fallback[i]) for i in range(len(by_id))])
        return cls(
            str(doc.get("name", default_name)),
            names,
            colors,
            ignore_index=int(doc.get("ignore_index", IGNORE_INDEX)),
            ignore_color=tuple(doc.get("ignore_color", (224, 224, 192))),
            stuff=tuple(i for i in range(len(by_id)) if _is_stuff(by_id[i], i)),
        )

    @classmethod
    def load(cls, path: str | Path) -> ClassSet:
        """Read a ``classes.json`` file.

        Raises:
            InvalidInput: naming the file when it is not valid JSON or not a class-set document.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"cannot read class set {path}: {exc}") from exc
        try:
            return cls.from_json(doc, default_name=path.parent.name or "custom")
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write this set as ``classes.json`` (atomically)."""
        from core.io.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def builtin(cls, name: str) -> ClassSet:
        """One of the built-in sets: ``voc`` (21 classes), ``cityscapes`` (19 train ids), ``ade20k`` (150)."""
        key = name.strip().lower()
        if key == "voc":
            return cls("voc", VOC_NAMES, voc_colormap(256)[: len(VOC_NAMES)], stuff=VOC_STUFF)
        if key == "cityscapes":
            return cls("cityscapes", CITYSCAPES_NAMES, np.array(CITYSCAPES_COLORS), stuff=CITYSCAPES_STUFF)
        if key == "ade20k":
            return cls("ade20k", ADE20K_NAMES, np.array(ADE20K_COLORS), ignore_color=(0, 0, 0), stuff=ADE20K_STUFF)
        raise InvalidInput(f"unknown built-in class set {name!r}; accepted: {', '.join(BUILTIN_CLASS_SETS)}")


def _is_stuff(entry: dict, index: int) -> bool:
    """Whether a ``classes.json`` entry marks its class as stuff (``role`` or detectron2's ``isthing``)."""
    role = entry.get("role", "stuff" if entry.get("isthing", 1) in (0, False) else "thing")
    if role not in ROLES:
        raise InvalidInput(f"classes.json class {index}: role must be one of {', '.join(ROLES)}, got {role!r}")
    return role == "stuff"


def classes_in(label_map: np.ndarray, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Sorted class indices present in an ``H x W uint8`` label map, without the ignore index."""
    values = np.unique(label_map)
    return [int(v) for v in values if v != ignore_index]
