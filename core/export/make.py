"""Making one job's sample: a real sample as it is, or a generated one from its step's backend and seeds.

Steps are independent: a gan step's ``maps_from: N`` remakes the recombination of step ``N``'s job from its seeds
(recombination is deterministic) rather than reading another job's output, so any runner, order or worker count
gives the same files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput, SampleProblem
from core.export.plan import Job
from core.export.recipe import Recipe, Step
from core.store import DatasetStore
from core.types import Box


@dataclass
class Made:
    """One sample ready to write.

    Attributes:
        label_map: ``H x W uint8``.
        image: ``H x W x 3 uint8`` RGB for generated samples, or ``None`` when ``image_file`` is copied as is.
        image_file: the real sample's image file (its bytes are copied, never re-encoded).
        boxes: stored boxes of a real sample, or ``None`` (derived from the label map's instances).
        source: the real sample it comes from (splits keep one photo's variants together).
        record: provenance (backend, settings, seeds).
    """

    label_map: np.ndarray
    image: np.ndarray | None = None
    image_file: Path | None = None
    boxes: list[Box] | None = None
    source: str = ""
    record: dict = field(default_factory=dict)


class MakeContext:
    """What making samples needs, built once per process: the dataset store and the region libraries."""

    def __init__(self, recipe: Recipe, store: DatasetStore | None = None):
        self.recipe = recipe
        self.store = store or DatasetStore(recipe.source)
        self._libraries: dict[int, object] = {}
        self._clip = None
        self._segmenter = None
        self._plan: list | None = None
        self._meshes: dict[str, object] = {}

    def step_jobs(self, number: int) -> list[Job]:
        """The planned jobs of generation step ``number`` (1 = the first), from the recipe's plan (a pure function
        of the recipe and the dataset, computed once per process)."""
        if self._plan is None:
            from core.export.plan import plan_jobs

            self._plan = plan_jobs(self.recipe, self.store)
        return [job for job in self._plan if job.step == number]

    def clip(self):
        """The CLIP model and processor when the recipe's quality asks for CLIP scores, else ``None``."""
        if not self.recipe.quality.get("clip"):
            return None
        if self._clip is None:
            from core.export.quality import CLIP_MODEL_ID
            from core.models import default_registry

            self._clip = default_registry().load(CLIP_MODEL_ID)
        return self._clip

    def segmenter(self):
        """The recipe's quality segmenter (loaded once per process), else ``None``."""
        run = self.recipe.quality.get("segmenter")
        if not run:
            return None
        if self._segmenter is None:
            from core.task.evaluate import load_segmenter

            self._segmenter = load_segmenter(run, "best", device="auto")
        return self._segmenter

    def meshes(self, folder: str):
        """The mesh library of a render step (``""``: the bundled meshes), read once per process; only meshes of the
        dataset's classes."""
        from core.render.meshes import procedural_library, scan_meshes

        if folder not in self._meshes:
            self._meshes[folder] = scan_meshes(folder, self.store.classes.names) if folder else procedural_library()
        return self._meshes[folder]

    def library(self, min_area: int):
        from core.labels.recombine import RegionLibrary

        if min_area not in self._libraries:
            self._libraries[min_area] = RegionLibrary(self.store, min_area)
        return self._libraries[min_area]


def make(job: Job, context: MakeContext) -> Made:
    """The sample of one job.

    Raises:
        StudioError: the job cannot be made (an unreadable source, a class with no region, a missing model);
            the runner records it as failed and goes on.
    """
    if job.kind == "real":
        return _real(job, context.store)
    step = context.recipe.generate[job.step - 1]
    if job.kind == "composite":
        return _composite(job, step, context)
    if job.kind == "recombine":
        return _recombine(job, step, context)
    if job.kind == "gan":
        return _gan(job, step, context)
    if job.kind == "render":
        return _render(job, step, context)
    return _diffusion(job, step, context)


def _render(job: Job, step: Step, context: MakeContext) -> Made:
    """A render step's sample: meshes of the dataset's classes path-traced over a background (the job's source
    sample under a balance plan, else one drawn from the step's background folder or the dataset's images by the
    job's seed); a balance plan's target class is every object's class."""
    from dataclasses import replace

    from core.export.recipe import render_settings
    from core.render.dataset import background_pool, load_background
    from core.render.engine import active_variant, renderer_version
    from core.render.render import render_seed

    options, store = step.options, context.store
    settings = render_settings(options)
    library = context.meshes(options.get("meshes", ""))
    if job.target_class:
        settings = replace(settings, class_weights={c: float(c == job.target_class) for c in library.classes()})
    seed = _job_seed(job)
    if job.source:
        from core.render.dataset import Background

        labelled = job.source in set(store.labelled_ids())
        path = str(store.get(job.source).image_path)
        background = Background("sample" if labelled else "unlabelled", path, job.source)
    else:
        pool = background_pool(options.get("backgrounds"), None if options.get("backgrounds") else store)
        background = pool[int(np.random.default_rng([seed, 11]).integers(len(pool)))]
    image, labels, doc = load_background(background, settings.size, seed, store)
    result = render_seed(seed, settings, library, list(store.classes.names), image, doc, labels)
    sums = {m.name: m.sha256 for group in library.by_class.values() for m in group}
    record = {"generator": "render", "seed": seed, "scene": result.scene, "target_class": job.target_class,
              "meshes": {o["mesh"]: sums[o["mesh"]] for o in result.scene["objects"]},
              "renderer": {"variant": active_variant(), "version": renderer_version()}}  # fmt: skip
    return Made(result.label_map, result.image, None, None, background.sample or "", record)


def _real(job: Job, store: DatasetStore) -> Made:
    data = store.read(job.source)
    if data.label_map is None:
        raise SampleProblem(data.label_problem or f"{job.source!r} has no label map")
    record = {"generator": "real", "revision": data.revision}
    return Made(data.label_map, None, data.sample.image_path, list(data.sample.boxes), job.source, record)


def _placement(options: dict, classes, defaults: dict):
    from core.labels.overlay import Placement

    scale = options.get("scale", defaults.get("scale", (0.8, 1.2)))
    protected = tuple(classes.index_of(n) for n in options.get("protect", []))
    size = options.get("size", defaults.get("size", "relative"))
    return Placement(mode=options.get("placement", "random"), max_translate=float(options.get("max_translate", defaults.get("max_translate", 0.25))),
                     scale=(float(scale[0]), float(scale[1])), max_rotate=float(options.get("max_rotate", defaults.get("max_rotate", 10.0))),
                     protected=protected, layer=options.get("layer", "top"), ignore_border=int(options.get("ignore_border", 0)),
                     size=size, min_area_share=float(options.get("min_area_share", 0.0)),
                     max_area_share=float(options.get("max_area_share", 1.0)),
                     max_stretch=float(options.get("max_stretch", 1.2 if size == "data" else 1.0)),
                     position=options.get("position", "around"), ground_plane=bool(options.get("ground_plane", False)),
                     horizon=float(options.get("horizon", 0.4)))  # fmt: skip


def _classes(job: Job, options: dict) -> tuple[str, ...]:
    if job.target_class:
        return (job.target_class,)
    names = options.get("classes") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _composite(job: Job, step: Step, context: MakeContext) -> Made:
    from core.generate.composite import CompositeParams, CompositeRequest, composite_sample

    options = step.options
    placement = _placement(options, context.store.classes, {"scale": (0.5, 1.2), "max_translate": 0.5, "max_rotate": 15.0,
                                                            "size": "data"})  # fmt: skip
    objects = options.get("objects", (1, 3))
    params = CompositeParams(placement, (int(objects[0]), int(objects[1])), float(options.get("max_truncation", 0.3)),
                             float(options.get("max_overlap", 0.3)), options.get("blending", "gaussian"),
                             int(options.get("blend_size", 3)), int(options.get("distractors", 0)),
                             background_overlap=float(options.get("background_overlap", 0.3)))  # fmt: skip
    min_area = int(options.get("min_area", 64))
    stuff = options.get("stuff")
    request = CompositeRequest(_classes(job, options), 1, context.recipe.seed, params, None, min_area,
                               background_pool=options.get("backgrounds", "labelled"),
                               stuff=None if stuff is None else tuple([stuff] if isinstance(stuff, str) else stuff),
                               paste_stuff=bool(options.get("paste_stuff", False)))  # fmt: skip
    sample = composite_sample(context.library(min_area), request, job.index, list(job.seeds))
    return Made(sample.result.label_map, sample.result.image, None, None, sample.record["background"],
                {"generator": "composite", **sample.record, "target_class": job.target_class})


def _recombined(job: Job, step: Step, context: MakeContext):
    """The recombination of a recombine step's job (a :class:`~core.labels.recombine.RecombinedSample`; its image
    is ``None`` for maps built from bands)."""
    from core.labels.recombine import RecombineRequest, recombine_one

    options = step.options
    names = _classes(job, options)
    if not names:
        raise InvalidInput(f"recipe: generate[{job.step - 1}].options.classes: name the classes to add")
    min_area = int(options.get("min_area", 64))
    request = RecombineRequest(options.get("mode", "overlay"), names, 1, context.recipe.seed,
                               _placement(options, context.store.classes, {"size": "data"}), min_area=min_area,
                               background_overlap=float(options.get("background_overlap", 0.3)))  # fmt: skip
    return recombine_one(context.library(min_area), request, job.index, list(job.seeds))


def _recombine(job: Job, step: Step, context: MakeContext) -> Made:
    sample = _recombined(job, step, context)
    if sample.result.image is None:
        raise InvalidInput("this recombination made a label map without an image (bands); give a base map instead")
    source = sample.record.get("target") or (sample.record.get("base") or {}).get("sample") or ""
    return Made(sample.result.label_map, sample.result.image, None, None, source,
                {"generator": "recombine", **sample.record, "target_class": job.target_class})


def _job_seed(job: Job) -> int:
    """A model seed (31 bits) from the job's seed sequence ``(seed, step, index)``."""
    return int.from_bytes(hashlib.sha1(repr(job.seeds).encode()).digest()[:4], "big") & 0x7FFFFFFF


def _gan(job: Job, step: Step, context: MakeContext) -> Made:
    """A gan step's sample: a pair run's new sample, or a label2image run's image for a label map kept exactly
    (the job's dataset sample, or with ``maps_from: N`` the map of job ``index mod count`` of recombine step N,
    remade from its seeds)."""
    from core.generate.gan import check_classes, gan_record, image_for_map, load_gan, pair_for_seed

    facts, model = load_gan(step.model or "", ema=bool(step.options.get("ema", True)))
    check_classes(facts, context.store.classes)
    seed = _job_seed(job)
    record = {"generator": "gan", "mode": "gan", "kind": facts.kind, "seed": seed, "settings": gan_record(model, seed),
              "target_class": job.target_class}  # fmt: skip
    if facts.kind == "pair":
        image, label_map = pair_for_seed(facts, model, seed)
        return Made(label_map, image, None, None, "", record)
    maps_from = step.options.get("maps_from", "dataset")
    if maps_from == "dataset":
        label_map = context.store.label_map(job.source) if job.source else None
        if label_map is None:
            raise SampleProblem(f"{job.source!r} has no label map: a label2image GAN keeps the label map")
        source, extra = job.source, {}
    else:
        planned = context.step_jobs(int(maps_from))
        if not planned:
            raise InvalidInput(f"recipe: generate[{job.step - 1}].options.maps_from: step {maps_from} plans no sample")
        made_from = planned[job.index % len(planned)]
        sample = _recombined(made_from, context.recipe.generate[int(maps_from) - 1], context)
        label_map = sample.result.label_map
        source = sample.record.get("target") or (sample.record.get("base") or {}).get("sample") or ""
        extra = {"maps_from": {"step": int(maps_from), "job": made_from.output_id, "recombine": sample.record}}
    image = image_for_map(facts, model, label_map, seed, name=f"the label map of {source or 'a recombination'!r}")
    return Made(label_map, image, None, None, source or "", {**record, **extra})


def _diffusion(job: Job, step: Step, context: MakeContext) -> Made:
    from core.generate.diffusion import DEFAULT_NEGATIVE, DiffusionSettings
    from core.generate.runner import generate_sample

    options = step.options
    seed = _job_seed(job)
    settings = DiffusionSettings(prompt=options.get("prompt", ""), negative_prompt=options.get("negative_prompt", DEFAULT_NEGATIVE),
                                 steps=int(options.get("steps", 30)), guidance_scale=float(options.get("guidance_scale", 7.5)),
                                 conditioning_scale=float(options.get("conditioning_scale", 1.0)),
                                 width=options.get("width"), height=options.get("height"), seed=seed, count=1)  # fmt: skip
    (sample,) = generate_sample(context.store, job.source, job.kind, step.model, settings, index=job.index)
    return Made(sample.result.label_map, sample.result.image, None, None, job.source,
                {"generator": job.kind, **sample.record, "target_class": job.target_class})
