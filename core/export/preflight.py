"""Checks before an export makes anything: the models it needs are installed (a gan step's run folder holds an
intact checkpoint of the dataset's classes), the classes it names exist, and the output folder's disk has room
for the plan. Each failure names what is wrong and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.errors import InvalidInput
from core.export.plan import Job
from core.export.recipe import Recipe
from core.store import DatasetStore

# Bytes written per sample relative to the real samples' image + label files, per format: other formats link
# the images and re-encode only label maps, except Cityscapes (PNG images) and Hugging Face (a copy in Arrow).
FORMAT_WEIGHT = {"voc": 1.0, "coco": 0.15, "cityscapes": 3.0, "yolo-seg": 0.1, "mmseg": 0.2, "hf": 1.0}
MARGIN = 1.2
SAMPLED = 20  # real samples whose file sizes give the estimate


def preflight(recipe: Recipe, store: DatasetStore, jobs: list[Job], out: Path, *, registry=None) -> dict:
    """Check the recipe against the dataset, the installed models and the free space at ``out``.

    Returns:
        ``{"bytes_needed": int, "bytes_free": int}`` (the estimate and what the disk has).

    Raises:
        InvalidInput: a missing model (with how to install it), an unknown class (with the known ones), or not
            enough free space (with both figures).
    """
    check_models(recipe, registry)
    check_gan_runs(recipe, store)
    check_segmenter(recipe, store)
    check_render(recipe, store)
    check_classes(recipe, store)
    needed = estimate_bytes(recipe, store, jobs)
    free = shutil.disk_usage(_existing_parent(out)).free
    if needed > free:
        raise InvalidInput(f"the export needs about {_mb(needed)} and {out} has {_mb(free)} free; free some space, "
                           "choose another folder, or export fewer samples or formats")  # fmt: skip
    return {"bytes_needed": needed, "bytes_free": free}


def check_models(recipe: Recipe, registry=None) -> None:
    """Every model the recipe uses is installed (diffusion steps: the control model and its base; CLIP scores)."""
    from core.export.quality import CLIP_MODEL_ID
    from core.models import default_registry

    registry = registry or default_registry()
    needed: list[tuple[str, str]] = []
    for number, step in enumerate(recipe.generate):
        if step.model and step.backend != "gan":  # a gan step's model is a run folder: check_gan_runs
            key = f"generate[{number}].model"
            try:
                spec = registry.spec(step.model)
            except InvalidInput as exc:
                raise InvalidInput(f"recipe: {key}: {exc}") from None
            needed += [(key, step.model)] + ([(key, spec.base)] if spec.base else [])
    if recipe.quality.get("clip"):
        needed.append(("quality.clip", CLIP_MODEL_ID))
    for key, model_id in needed:
        status = registry.status(model_id)
        if not status.available:
            raise InvalidInput(f"recipe: {key}: {status.install_message()}")


def check_segmenter(recipe: Recipe, store: DatasetStore) -> None:
    """The quality segmenter's run holds a checkpoint and predicts the dataset's classes."""
    run = recipe.quality.get("segmenter")
    if not run:
        return
    from core.task.evaluate import load_segmenter

    try:
        model = load_segmenter(run, "best", device="cpu")
    except InvalidInput as exc:
        raise InvalidInput(f"recipe: quality.segmenter: {exc}") from None
    if tuple(model.classes.names) != tuple(store.classes.names):
        raise InvalidInput(f"recipe: quality.segmenter: {run} predicts the classes {', '.join(model.classes.names)} but "
                           f"the dataset has {', '.join(store.classes.names)}; train it on this dataset")  # fmt: skip


def check_gan_runs(recipe: Recipe, store: DatasetStore) -> None:
    """Every gan step's run folder holds a complete, undamaged checkpoint (its weights match their recorded
    sha256) trained with the dataset's class set, and the step asks what its kind can do."""
    from core.errors import StudioError
    from core.export.plan import gan_run_kind
    from core.generate.gan import check_classes as check_run_classes
    from core.generate.gan import verify_weights

    for number, step in enumerate(recipe.generate):
        if step.backend != "gan":
            continue
        gan_run_kind(step, number + 1)
        try:
            facts = verify_weights(step.model or "", ema=bool(step.options.get("ema", True)))
            check_run_classes(facts, store.classes, f"the recipe's source {store.root}")
        except StudioError as exc:
            raise InvalidInput(f"recipe: generate[{number}].model: {exc}") from None


def check_classes(recipe: Recipe, store: DatasetStore) -> None:
    """Class names in step options (``classes``, ``protect``) exist in the dataset's class set."""
    for number, step in enumerate(recipe.generate):
        for option in ("classes", "protect"):
            names = step.options.get(option) or ()
            for name in (names,) if isinstance(names, str) else names:
                try:
                    store.classes.index_of(str(name))
                except InvalidInput:
                    known = ", ".join(n for n in store.classes.names if n)
                    raise InvalidInput(f"recipe: generate[{number}].options.{option}: unknown class {name!r}; the "
                                       f"dataset's classes are {known}") from None  # fmt: skip


def estimate_bytes(recipe: Recipe, store: DatasetStore, jobs: list[Job]) -> int:
    """About how many bytes the plan writes: the mean image + label file size of (up to 20) real samples, per job,
    weighted by the formats."""
    sizes = []
    for sample_id in store.labelled_ids()[:SAMPLED]:
        sample = store.get(sample_id)
        try:
            image = sample.image_path.stat().st_size
            sizes.append(image + (sample.label_path.stat().st_size if sample.label_path else image // 10))
        except OSError:
            continue
    per_sample = sum(sizes) / len(sizes) if sizes else 200_000
    weight = sum(FORMAT_WEIGHT.get(f, 1.0) for f in {*recipe.formats, "voc"})
    return int(per_sample * weight * len(jobs) * MARGIN)


def _existing_parent(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def check_render(recipe: Recipe, store: DatasetStore) -> None:
    """Every render step can run: Mitsuba is installed, its meshes folder holds meshes of the dataset's classes.

    Raises:
        InvalidInput: naming the step, what is missing and how to install it or name the folders.
    """
    from core.render.engine import INSTALL_HINT, renderer_installed
    from core.render.meshes import procedural_library, scan_meshes

    for number, step in enumerate(recipe.generate):
        if step.backend != "render":
            continue
        key = f"recipe: generate[{number}]"
        if not renderer_installed():
            raise InvalidInput(f"{key}: the render backend needs Mitsuba 3, which is not installed: {INSTALL_HINT}")
        folder = step.options.get("meshes", "")
        library = scan_meshes(folder, store.classes.names) if folder else procedural_library()
        missing = [c for c in library.classes() if c not in store.classes.names[1:]]
        if missing or not library.classes():
            skipped = "; ".join(f"{p}: {why}" for p, why in library.skipped[:3])
            raise InvalidInput(f"{key}.options.meshes: no mesh of the dataset's classes ({', '.join(store.classes.names[1:])})"
                               + (f"; bundled mesh classes {missing} are not among them" if missing else "")
                               + (f"; left out: {skipped}" if skipped else ""))  # fmt: skip
