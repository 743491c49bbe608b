"""Thumbnails cached in ``<dataset>/.segstudio/thumbs/``, rebuilt when their image changes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from core.io.atomic import atomic_write
from core.io.images import thumbnail
from core.types import Dataset, Sample

THUMBS_DIR = Path(".segstudio") / "thumbs"


def thumbnail_path(dataset: Dataset, sample: Sample, max_side: int = 256) -> Path:
    """Where the sample's thumbnail is cached."""
    return dataset.root / THUMBS_DIR / str(max_side) / f"{sample.id}.jpg"


def ensure_thumbnail(dataset: Dataset, sample: Sample, max_side: int = 256) -> Path:
    """The sample's cached thumbnail, (re)built when missing or older than the image.

    Raises:
        ImageLoadError: when the image cannot be read.
    """
    path = thumbnail_path(dataset, sample, max_side)
    if path.is_file() and path.stat().st_mtime_ns >= sample.image_path.stat().st_mtime_ns:
        return path
    small = thumbnail(sample.image_path, max_side)
    atomic_write(path, lambda tmp: Image.fromarray(small).save(tmp, format="JPEG", quality=88))
    return path
