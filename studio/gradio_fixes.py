"""One fix to Gradio's file cache, applied when the studio's app is built.

Gradio names a rendered image after a hash of its bytes and then writes it with ``Path.write_bytes`` even
when that file already exists. Two people looking at the same picture get the same path, and one reply
rewrites (truncates, then refills) the file while the other's browser, or the other's preprocessing, is
reading it: a broken image or an ``UnidentifiedImageError`` under load. Since the name is the content, a
file that exists already holds these bytes: here it is written once, atomically, and only touched after
(so the cache sweep, which ages files by ctime, keeps it while in use).
"""

from __future__ import annotations

import os
from pathlib import Path

from gradio import processing_utils

from core.io.atomic import atomic_write

_ORIGINAL = processing_utils.save_pil_to_cache


def save_pil_to_cache_once(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:  # noqa: A002
    """``gradio.processing_utils.save_pil_to_cache`` that never rewrites an existing file."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    path = (Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}").resolve()
    if path.is_file():
        os.utime(path)
    else:
        atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=False)
    return str(path)


def apply() -> None:
    """Install the fix (idempotent)."""
    processing_utils.save_pil_to_cache = save_pil_to_cache_once
