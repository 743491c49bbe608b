"""A small on-disk index of which classes each sample's label map holds.

Filtering a gallery by class needs the classes of every label map; decoding thousands of PNGs on
every visit is slow, so the result is kept in ``<dataset>/.segstudio/index.json`` keyed by each file's
modification time and size, and only changed files are decoded again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from core.io.atomic import atomic_write_text
from core.types import Dataset

INDEX_FILE = Path(".segstudio") / "index.json"


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def _classes_of_png(path: Path, ignore_index: int) -> list[int]:
    """Distinct label values of a palette/greyscale label PNG (ignore index dropped); [] if unreadable."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                return []
            counts = np.bincount(np.asarray(img, dtype=np.uint8).ravel(), minlength=256)
    except (OSError, SyntaxError, ValueError):
        return []
    return [int(v) for v in np.flatnonzero(counts) if v != ignore_index]


def label_classes(dataset: Dataset, *, persist: bool = True) -> dict[str, set[int]]:
    """Sample id -> class indices present in its label map (samples without one are absent).

    Args:
        persist: read and update the on-disk cache in the dataset folder.
    """
    cache_path = dataset.root / INDEX_FILE
    cache: dict[str, dict] = {}
    if persist and cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8")).get("label_classes", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            cache = {}
    result: dict[str, set[int]] = {}
    fresh: dict[str, dict] = {}
    changed = False
    for sample in dataset.samples:
        if not sample.has_label_map:
            continue
        stamp = _stamp(sample.label_path)  # type: ignore[arg-type]
        entry = cache.get(sample.id)
        if not entry or entry.get("stamp") != stamp:
            entry = {"stamp": stamp, "classes": _classes_of_png(sample.label_path, dataset.classes.ignore_index)}  # type: ignore[arg-type]
            changed = True
        fresh[sample.id] = entry
        result[sample.id] = set(entry["classes"])
    if persist and (changed or set(fresh) != set(cache)):
        try:
            atomic_write_text(cache_path, json.dumps({"label_classes": fresh}))
        except OSError:
            pass  # a read-only dataset still browses; the index is only a cache
    return result
