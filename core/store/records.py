"""Sample and dataset records: paths and annotations of a dataset's samples (arrays load on demand).

These are the records a :class:`core.store.DatasetStore` hands out; the store owns their loading
(``core.store.layouts``) and their saving.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.types import Box, ClassSet

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``img_2`` before ``img_10``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(text))


@dataclass
class Sample:
    """One image of a dataset and its annotations (paths only; arrays are loaded on demand).

    Attributes:
        id: unique within the dataset (the file stem for VOC layouts).
        image_path: the image file.
        label_path: the palette-PNG label map, or ``None`` when the sample has none yet.
        boxes: the sample's boxes (half-open pixel corners, class indices of the dataset's set).
        split: the ``ImageSets`` split(s) the sample belongs to, if any.
        size: ``(height, width)`` when known without decoding the image (from VOC XML).
        label_source: where the label map is derived from when the dataset was written by another tool
            (a :class:`core.store.foreign.LabelSource`); a saved ``label_path`` takes precedence over it.
    """

    id: str
    image_path: Path
    label_path: Path | None = None
    boxes: list[Box] = field(default_factory=list)
    split: tuple[str, ...] = ()
    size: tuple[int, int] | None = None
    label_source: Any = field(default=None, repr=False, compare=False)

    @property
    def has_label_map(self) -> bool:
        return (self.label_path is not None and self.label_path.exists()) or self.label_source is not None

    def box_classes(self) -> set[int]:
        """The class indices that this sample's boxes carry."""
        return {b.label for b in self.boxes}


@dataclass
class Dataset:
    """A folder of samples sharing a class set.

    Attributes:
        root: the dataset folder.
        layout: ``"voc"``, ``"boxes_csv"``, ``"images"`` (a plain folder of images), or a layout of another
            tool: ``"coco"``, ``"yolo"``, ``"cityscapes"``, ``"mmseg"``, ``"labelme"`` (see
            :mod:`core.store.foreign`).
        classes: the class set (``classes.json`` in the root, else VOC).
        samples: samples in a stable order (sorted by id).
        problems: one message per file or entry that could not be read while opening the dataset
            (it was skipped; nothing was changed on disk).
    """

    root: Path
    layout: str
    classes: ClassSet
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_id = {s.id: s for s in self.samples}
        if len(self._by_id) != len(self.samples):
            counts = Counter(s.id for s in self.samples)
            dupes = sorted(sample_id for sample_id, n in counts.items() if n > 1)
            raise InvalidInput(f"dataset {self.root} has repeated sample ids: {', '.join(dupes[:10])}")

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def get(self, sample_id: str) -> Sample:
        """The sample with this id.

        Raises:
            InvalidInput: naming the unknown id.
        """
        try:
            return self._by_id[sample_id]
        except KeyError:
            shown = ", ".join(self.ids[:8]) + (" ..." if len(self.ids) > 8 else "")
            raise InvalidInput(f"no sample {sample_id!r} in {self.root}; samples: {shown}") from None

    def filter_by_classes(
        self, class_indices: Iterable[int], label_classes: dict[str, set[int]] | None = None
    ) -> list[Sample]:
        """Samples holding every class in ``class_indices``, by their boxes and, where given, by
        ``label_classes`` (sample id -> classes present in its label map)."""
        wanted = set(class_indices)
        if not wanted:
            return list(self.samples)
        out = []
        for sample in self.samples:
            present = sample.box_classes() | (label_classes or {}).get(sample.id, set())
            if wanted <= present:
                out.append(sample)
        return out
