"""Rendered samples as a dataset: backgrounds to compose over, and the writer behind ``segstudio render``.

Backgrounds come from a folder declared background-only (``folder``: its pixels are class 0), from a dataset's
samples (``sample`` when the sample has a usable label map: its labels are kept outside the objects; ``unlabelled``
otherwise: 255 outside the objects), or, when neither is given, a procedural backdrop drawn from the seed
(``plain``: class 0). Each image is scaled to cover the render and cropped at its centre (label maps nearest only).

The output is a VOC-layout folder: ``JPEGImages/<id>.png`` (lossless), ``SegmentationClass/<id>.png`` (palette),
``SegmentationObject/<id>.png`` (instance ids, 0 where no rendered object), ``classes.json`` and ``manifest.jsonl``,
one line per sample: the scene description, the mesh files' sha256, the background, the settings, the renderer.
Sample ``i`` uses seed ``seed + i``; a rerun on the same folder keeps the finished samples and renders the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import Cancelled, InvalidInput, StudioError
from core.io.atomic import atomic_write_text
from core.progress import CancelToken, ProgressFn, no_progress
from core.render.scene import RenderSettings
from core.train.runs import JOB_FILES

MANIFEST = "manifest.jsonl"
FLUSH_EVERY, FLUSH_SECONDS = 16, 10.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Background:
    """Where one background comes from: ``kind`` (plain, folder, sample, unlabelled), an image ``path`` (none for
    plain), the dataset ``sample`` id (sample / unlabelled)."""

    kind: str
    path: str = ""
    sample: str = ""

    def doc(self) -> dict:
        out = {"kind": self.kind}
        if self.path:
            out.update(path=self.path, sha256=hashlib.sha256(Path(self.path).read_bytes()).hexdigest())
        if self.sample:
            out["sample"] = self.sample
        return out


def background_pool(backgrounds: str | Path | None = None, store=None) -> list[Background]:
    """Every background to draw from: the images of ``backgrounds`` (background-only) and the samples of ``store``
    (labelled or not); ``[plain]`` when both are absent.

    Raises:
        InvalidInput: ``backgrounds`` is not a folder, or holds no image (names the accepted suffixes).
    """
    pool: list[Background] = []
    if backgrounds is not None:
        folder = Path(backgrounds)
        if not folder.is_dir():
            raise InvalidInput(f"backgrounds folder {folder} does not exist; give a folder of background-only images")
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise InvalidInput(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)}); give background-only photos")
        pool += [Background("folder", str(p)) for p in images]
    if store is not None:
        labelled = set(store.labelled_ids())
        for sample_id in store.ids:
            path = str(store.get(sample_id).image_path)
            pool.append(Background("sample" if sample_id in labelled else "unlabelled", path, sample_id))
    return pool or [Background("plain")]


def cover_crop(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """``image`` (``H x W [x C]``) scaled to cover ``size = (width, height)`` and cropped at its centre."""
    import cv2  # not at import time: the studio's start-up stays free of OpenCV

    w, h = size
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    x, y = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(resized[y:y + h, x:x + w])


def plain_backdrop(size: tuple[int, int], seed: int) -> np.ndarray:
    """``H x W x 3 uint8``: a vertical two-colour gradient with soft noise, drawn from ``seed``."""
    import cv2

    w, h = size
    rng = np.random.default_rng([int(seed), 7])
    top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    image = top * (1 - t) + bottom * t + np.zeros((h, w, 3))
    noise = cv2.GaussianBlur(rng.normal(0, 12, (h, w, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def load_background(background: Background, size: tuple[int, int], seed: int, store=None):
    """``(image H x W x 3 uint8, label map H x W uint8 or None, description)`` of a background at the render's size.

    Raises:
        StudioError: the image (or the sample) cannot be read.
    """
    from core.io.images import load_image

    if background.kind == "plain":
        return plain_backdrop(size, seed), None, {"kind": "plain", "seed": int(seed)}
    if background.kind in ("sample", "unlabelled") and store is not None:
        data = store.read(background.sample)
        labels = data.label_map if background.kind == "sample" else None
        if background.kind == "sample" and labels is None:
            raise InvalidInput(f"sample {background.sample} lost its label map")
        image = cover_crop(data.image, size)
        label_map = cover_crop(labels, size, nearest=True) if labels is not None else None
        return image, label_map, background.doc()
    return cover_crop(load_image(background.path), size), None, background.doc()


class _Manifest:
    """Manifest lines written in batches: the file is rewritten atomically every :data:`FLUSH_EVERY` samples or
    :data:`FLUSH_SECONDS`, and when the batch ends or stops (rewriting it per sample cost the whole file each time). A
    killed process leaves the old or the new file and loses at most the last few lines; a rerun renders those samples
    again, byte for byte."""

    def __init__(self, path: Path):
        self.path, self.pending, self.flushed_at = path, [], time.monotonic()

    def add(self, record: dict) -> None:
        self.pending.append(json.dumps(record, sort_keys=True) + "\n")
        if len(self.pending) >= FLUSH_EVERY or time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            old = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
            atomic_write_text(self.path, old + "".join(self.pending))
        self.pending, self.flushed_at = [], time.monotonic()


def write_sample(out: Path, sample_id: str, result, classes) -> None:
    """The image, label map and instance map of one render (each written atomically)."""
    from core.io.images import save_image, save_label_map

    save_image(out / "JPEGImages" / f"{sample_id}.png", result.image)
    save_label_map(out / "SegmentationClass" / f"{sample_id}.png", result.label_map, classes)
    save_gray_png(out / "SegmentationObject" / f"{sample_id}.png", result.instance_map)


def save_gray_png(path: Path, array: np.ndarray) -> None:
    """An ``H x W uint8`` array as an 8-bit greyscale PNG (atomically): value = instance id."""
    from PIL import Image

    from core.io.atomic import atomic_write

    atomic_write(path, lambda tmp: Image.fromarray(array.astype(np.uint8), mode="L").save(tmp, format="PNG"))


@dataclass
class RenderRun:
    """What :func:`write_renders` did: ``written`` ids, ``kept`` (already there), ``skipped`` (id, reason)."""

    out: Path
    written: list[str]
    kept: list[str]
    skipped: list[tuple[str, str]]


def render_classes(library, store=None):
    """The output's :class:`core.types.ClassSet`: the dataset's when rendering for one (its classes must cover the
    meshes'), else ``background`` plus the meshes' classes (VOC colours)."""
    from core.types import ClassSet, voc_colormap

    if store is not None:
        return store.classes
    names = ("background", *library.classes())
    return ClassSet("renders", names, voc_colormap(len(names))[: len(names)])


def write_renders(out: str | Path, count: int, seed: int, settings: RenderSettings, library, classes,
                  pool: list[Background], store=None, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> RenderRun:  # fmt: skip
    """Render ``count`` samples into ``out`` (see the module docstring); ``classes``: the output's
    :class:`core.types.ClassSet` (:func:`render_classes`). A background that cannot be read, or a
    scene no attempt could settle, is reported in ``skipped`` and the batch goes on.

    Raises:
        InvalidInput: ``out`` holds another dataset's files (a manifest of other classes).
        Cancelled: ``cancel`` was set (the finished samples stay; a rerun continues).
    """
    from core.labels.recombine import read_manifest
    from core.render.engine import active_variant, renderer_version
    from core.render.render import render_seed

    out = Path(out)
    class_names = list(classes.names)
    _check_output(out, class_names)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "classes.json").is_file():
        classes.save(out / "classes.json")
    done = set(read_manifest(out))
    report = progress or no_progress
    mesh_sums = {m.name: m.sha256 for group in library.by_class.values() for m in group}
    run = RenderRun(out, [], [], [])
    manifest = _Manifest(out / MANIFEST)
    try:
        for i in range(count):
            sample_id = f"render_{i:06d}"
            if sample_id in done:
                run.kept.append(sample_id)
                continue
            if cancel is not None and cancel.cancelled:
                raise Cancelled(f"rendering was cancelled after {len(run.written)} new samples; rerun to continue")
            report(i / max(count, 1), f"rendering {sample_id} ({i + 1}/{count})")
            sample_seed = seed + i
            background = pool[int(np.random.default_rng([sample_seed, 11]).integers(len(pool)))]
            try:
                image, labels, doc = load_background(background, settings.size, sample_seed, store)
                result = render_seed(sample_seed, settings, library, class_names, image, doc, labels, cancel)
            except Cancelled:
                raise
            except StudioError as exc:
                run.skipped.append((sample_id, f"{background.path or background.kind}: {exc}"))
                continue
            write_sample(out, sample_id, result, classes)
            record = {"id": sample_id, "index": i, "seed": sample_seed, "scene": result.scene,
                      "meshes": {o["mesh"]: mesh_sums[o["mesh"]] for o in result.scene["objects"]},
                      "settings": settings.to_json(), "renderer": {"variant": active_variant(), "version": renderer_version()}}  # fmt: skip
            manifest.add(record)
            run.written.append(sample_id)
    finally:
        manifest.flush()
    report(1.0, f"rendered {len(run.written)} samples ({len(run.kept)} kept, {len(run.skipped)} skipped)")
    return run


def _check_output(out: Path, class_names: list[str]) -> None:
    from core.types import ClassSet

    classes_file = out / "classes.json"
    if (out / MANIFEST).is_file() and classes_file.is_file():
        names = list(ClassSet.load(classes_file).names)
        if names != list(class_names):
            raise InvalidInput(f"{out} holds renders of other classes ({names}); choose another output folder")
    elif out.is_dir() and any(p.name not in JOB_FILES for p in out.iterdir()):  # a background job's own files
        raise InvalidInput(f"{out} is not empty and holds no renders; choose an empty or new output folder")




@dataclass(frozen=True)
class RenderJob:
    """A batch of renders as the studio starts it in the background (see :func:`core.train.jobs.start_render_job`).

    Attributes:
        out: the output folder; count, seed: samples ``render_000000 ..`` with seeds ``seed + i``.
        settings: :meth:`RenderSettings.to_json`; meshes: a mesh folder, or ``""`` for the bundled meshes.
        data: the dataset folder (its classes label the output when ``dataset_classes``; its images are backgrounds
            when ``dataset_backgrounds``); cache_dir: its workspace; backgrounds: a background-only folder or ``""``.
    """

    out: str
    count: int
    seed: int
    settings: dict
    meshes: str = ""
    data: str = ""
    cache_dir: str = ""
    backgrounds: str = ""
    dataset_classes: bool = False
    dataset_backgrounds: bool = False

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> RenderJob:
        return cls(**doc)

    def prepare(self):
        """``(settings, library, classes, pool, store)`` of the job, checked.

        Raises:
            InvalidInput: no usable mesh; mesh classes missing from the dataset's classes; a bad folder.
        """
        from core.render.meshes import procedural_library, scan_meshes

        settings = RenderSettings.from_json(self.settings)
        store = None
        if self.data and (self.dataset_classes or self.dataset_backgrounds):
            from core.store import DatasetStore

            store = DatasetStore(self.data, cache_dir=Path(self.cache_dir) if self.cache_dir else None)
        names = store.classes.names if (store is not None and self.dataset_classes) else None
        library = scan_meshes(self.meshes, names) if self.meshes else procedural_library()
        if not library.classes():
            raise InvalidInput("no usable mesh" + (f" in {self.meshes}" if self.meshes else "") + "; " +
                               "; ".join(f"{p}: {why}" for p, why in library.skipped[:3]))  # fmt: skip
        classes = render_classes(library, store if self.dataset_classes else None)
        missing = [c for c in library.classes() if c not in classes.names[1:]]
        if missing:
            raise InvalidInput(f"mesh classes {missing} are not classes of the dataset ({', '.join(classes.names[1:])})"
                               "; rename the mesh folders after the dataset's classes, or label with the meshes' own "
                               "classes")  # fmt: skip
        # with the meshes' own classes, a dataset sample's labels mean nothing here: its pixels count as unknown
        pool_store = store if self.dataset_backgrounds else None
        pool = background_pool(self.backgrounds or None, pool_store)
        if pool_store is not None and not self.dataset_classes:
            pool = [Background("unlabelled", b.path, b.sample) if b.kind == "sample" else b for b in pool]
        return settings, library, classes, pool, store

    def run(self, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> RenderRun:
        settings, library, classes, pool, store = self.prepare()
        return write_renders(self.out, self.count, self.seed, settings, library, classes, pool, store,
                             progress=progress, cancel=cancel)  # fmt: skip
