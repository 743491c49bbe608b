"""Gradio components adapted to the studio.

``BoxAnnotator`` is ``gradio_image_annotation.image_annotator`` that never decodes or re-saves its image:
the browser sends only the boxes back (the server keeps the image per editing session), and the image
shown is a file the studio wrote once, under a name derived from its content, so no request ever
rewrites a file another request may be reading.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from gradio.data_classes import FileData, GradioModel
from gradio_image_annotation import image_annotator

from core.io.atomic import atomic_write

PREVIEW_DIR = "segstudio-previews"
PREVIEWS_KEPT = 3


def _safe_name(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def write_preview(image: np.ndarray, folder: Path, keep: int = PREVIEWS_KEPT, quality: int = 90) -> str:
    """Write ``image`` (``H x W x 3 uint8``) as ``folder/<content hash>.jpg`` (once, atomically) and delete the
    folder's previews beyond the newest ``keep``; returns the path."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} preview as JPEG")
    data = encoded.tobytes()
    path = Path(folder) / f"{hashlib.sha256(data).hexdigest()[:32]}.jpg"
    if path.is_file():
        os.utime(path)
    else:
        atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=False)
    _keep_newest(Path(folder), keep)
    return str(path)


def _keep_newest(folder: Path, keep: int) -> None:
    try:
        files = sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def forget_previews(cache_dir: str | Path, owner: str) -> None:
    """Delete the preview folder of an editing session that has ended."""
    import shutil

    shutil.rmtree(Path(cache_dir) / PREVIEW_DIR / _safe_name(owner), ignore_errors=True)


class BoxesOverImage(GradioModel):
    """The annotator's data: the image is optional on the way in (API clients send boxes only)."""

    image: FileData | None = None
    boxes: list[dict] = []
    orientation: int = 0


class BoxAnnotator(image_annotator):
    """Boxes over an image; the value sent back holds the boxes only (``{"image": None, "boxes": [...]}``)."""

    data_model = BoxesOverImage
    is_template = True  # the browser uses image_annotator's own front end

    @classmethod
    def get_component_class_id(cls) -> str:
        return image_annotator.get_component_class_id()

    def preprocess(self, payload: BoxesOverImage | None) -> dict | None:
        if payload is None:
            return None
        return {"image": None, "boxes": [_box(raw) for raw in payload.boxes], "orientation": payload.orientation}

    def preview_file(self, image: np.ndarray, owner: str = "shared", keep: int = PREVIEWS_KEPT) -> str:
        """Write ``image`` (``H x W x 3 uint8``) as a JPEG into Gradio's cache, in a folder of the ``owner``
        (one editing session) under a name derived from its content: written once, atomically, never
        rewritten. Only the owner's newest ``keep`` previews stay (older ones were already shown)."""
        return write_preview(image, Path(self.GRADIO_CACHE) / PREVIEW_DIR / _safe_name(owner), keep)

    def postprocess(self, value: dict | None) -> BoxesOverImage | None:
        if value is None or not isinstance(value.get("image"), str):
            made = super().postprocess(value)
            return None if made is None else BoxesOverImage(**made.model_dump())
        boxes = value.get("boxes") or []
        path = value["image"]
        return BoxesOverImage(image=FileData(path=path, orig_name=Path(path).name), boxes=boxes,
                              orientation=value.get("orientation") or 0)  # fmt: skip

    def api_info(self) -> dict:
        return {"type": "object", "description": "boxes: [{xmin, ymin, xmax, ymax, label}] in image pixels"}


def _box(raw: dict) -> dict:
    """One box from the browser: corners in image pixels (the display scale undone), label, colour."""
    scale = float(raw.get("scaleFactor", 1) or 1)
    box = {key: round(float(raw[key]) / scale) for key in ("xmin", "ymin", "xmax", "ymax")}
    box["label"] = raw.get("label", "")
    return box
