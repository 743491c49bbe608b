"""Cut-and-paste compositing (Dwibedi et al. 2017; Tripathi et al. 2019): objects cut by their masks
from source samples are pasted onto background images with an affine placement, within truncation and
overlap limits, blended with one of several modes; the label map is updated in pasting (occlusion) order.

Plausibility by default: each pasted object's size (area share of the target, and aspect) is drawn from
the sizes of that class's objects observed in the dataset's own label maps (:mod:`core.labels.sizes`), the
background's own labelled objects count as already placed (no more than ``background_overlap`` of any of
them is hidden), and "stuff" classes (sky, road, wall, ...; see :class:`core.types.ClassSet`) are never
cut out as objects.

Blending artefacts can teach a segmenter the wrong cue ("pasted pixels have a halo"). Optional
*distractors* make the cue useless: background-textured cut-outs shaped like objects are pasted into
background regions with the same blending, and stay labelled background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from core.errors import InvalidInput, SampleProblem, require_all
from core.labels.overlay import Placement, Recombined, WarpedRegion, warp_image
from core.labels.placement import BackgroundObjects, Limits, background_objects, place_region
from core.labels.regions import Region

BLENDINGS = ("none", "gaussian", "poisson", "box", "motion")
BACKGROUND_TRIES = 4  # backgrounds drawn for one composite before it is given up (nothing fitted on any)


@dataclass(frozen=True)
class CompositeParams:
    """Settings of the compositor.

    Attributes:
        placement: random affine placement limits (size from the data or relative scale, position, rotation,
            flip); ``protected`` and ``layer`` apply as in overlays.
        objects: ``(min, max)`` objects per image.
        max_truncation: largest share of an object allowed to fall outside the image.
        max_overlap: largest share of an object allowed to cover objects pasted before it.
        background_overlap: largest share of each of the background's own labelled objects (connected
            components of its "thing" classes) that pasted objects may hide, all pastes together; 1 turns
            the check off.
        blending: ``none``, ``gaussian`` (feathered alpha), ``poisson`` (seamless clone), ``box`` (box-blurred
            alpha) or ``motion`` (alpha smeared along a random direction).
        blend_size: Gaussian sigma, or box / motion kernel length, in pixels.
        distractors: background-textured, object-shaped cut-outs pasted into background per image.
        attempts: placements tried per object before it is skipped.
    """

    placement: Placement = field(
        default_factory=lambda: Placement(mode="random", max_translate=0.5, scale=(0.5, 1.2), max_rotate=15.0,
                                          size="data", max_stretch=1.2)
    )  # fmt: skip
    objects: tuple[int, int] = (1, 3)
    max_truncation: float = 0.3
    max_overlap: float = 0.3
    blending: str = "gaussian"
    blend_size: int = 3
    distractors: int = 0
    attempts: int = 10
    background_overlap: float = 0.3

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.objects[0] <= self.objects[1] <= 50, f"objects per image must be (min, max) within 1..50, got {self.objects}"),
            (0 <= self.max_truncation <= 1, f"max truncation must be 0..1, got {self.max_truncation}"),
            (0 <= self.max_overlap <= 1, f"max overlap must be 0..1, got {self.max_overlap}"),
            (self.blending in BLENDINGS, f"blending must be one of {', '.join(BLENDINGS)}, got {self.blending!r}"),
            (1 <= self.blend_size <= 50, f"blend size must be 1..50 px, got {self.blend_size}"),
            (0 <= self.distractors <= 20, f"distractors must be 0..20, got {self.distractors}"),
            (1 <= self.attempts <= 100, f"attempts must be 1..100, got {self.attempts}"),
            (0 <= self.background_overlap <= 1, f"background overlap must be 0..1, got {self.background_overlap}"),
        ]  # fmt: skip
        require_all(checks, "compositing")
        object.__setattr__(self, "objects", tuple(int(v) for v in self.objects))

    def limits(self) -> Limits:
        """The placement limits of these settings."""
        return Limits(self.attempts, self.max_truncation, self.max_overlap)

    def reach(self) -> int:
        """How far (px) blending can change pixels beyond a mask's border."""
        if self.blending == "gaussian":
            return int(math.ceil(3 * self.blend_size))
        if self.blending in ("box", "motion"):
            return self.blend_size
        return 0

    def record(self) -> dict:
        return asdict(self)


def blend_alpha(mask: np.ndarray, params: CompositeParams, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel weight of the pasted image, ``h x w float32`` in ``[0, 1]``, from a hard mask."""
    import cv2

    alpha = mask.astype(np.float32)
    size = params.blend_size
    if params.blending == "gaussian":
        return cv2.GaussianBlur(alpha, (0, 0), size, borderType=cv2.BORDER_CONSTANT)
    if params.blending == "box":
        return cv2.blur(alpha, (size, size), borderType=cv2.BORDER_CONSTANT)
    if params.blending == "motion":
        kernel = np.zeros((size, size), np.float32)
        angle = float(rng.uniform(0, math.pi))
        c = (size - 1) / 2
        for t in np.linspace(-c, c, max(2, size * 2)):
            kernel[int(round(c + t * math.sin(angle))), int(round(c + t * math.cos(angle)))] = 1.0
        return cv2.filter2D(alpha, -1, kernel / kernel.sum(), borderType=cv2.BORDER_CONSTANT)
    return alpha


def _blend_into(image: np.ndarray, warped: WarpedRegion, mask: np.ndarray, params: CompositeParams, rng) -> str:
    """Blend a warped region's image into ``image`` (in place) under ``mask`` (the pixels actually pasted).

    Returns:
        the blending used (``poisson`` falls back to ``gaussian`` when OpenCV cannot clone there).
    """
    import cv2

    x0, y0, x1, y1 = warped.window
    window = image[y0:y1, x0:x1]
    if params.blending == "poisson" and mask.sum() > 16:
        ys, xs = np.nonzero(mask)
        bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1]
        if inner.any() and 0 < bx0 and 0 < by0 and bx1 < mask.shape[1] and by1 < mask.shape[0]:
            src = cv2.cvtColor(np.ascontiguousarray(warped.image), cv2.COLOR_RGB2BGR)
            dst = cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2BGR)
            center = (mask.shape[1] // 2, mask.shape[0] // 2)
            try:
                cloned = cv2.seamlessClone(src, dst, inner.astype(np.uint8) * 255, center, cv2.NORMAL_CLONE)
                window[:] = cv2.cvtColor(cloned, cv2.COLOR_BGR2RGB)
                return "poisson"
            except cv2.error:
                pass
        params = CompositeParams(placement=params.placement, blending="gaussian", blend_size=params.blend_size)
    alpha = blend_alpha(mask, params, rng)
    window[:] = cv2.blendLinear(np.ascontiguousarray(warped.image), np.ascontiguousarray(window), alpha, 1.0 - alpha)
    return params.blending


def composite(
    background: np.ndarray,
    labels: np.ndarray | None,
    objects: Sequence[Region],
    params: CompositeParams,
    rng: np.random.Generator,
    *,
    distractor_sources: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
    ignore_index: int = 255,
    sizes=None,
    stuff: Sequence[int] = (),
    known_objects: BackgroundObjects | None = None,
    redraw_sizes: bool = False,
) -> Recombined:
    """One composite image and its label map.

    Args:
        background: ``H x W x 3 uint8`` RGB.
        labels: its ``H x W uint8`` label map, or ``None`` for an unlabelled background: then every pixel not
            covered by a pasted object is ``ignore_index`` (unknown), never background.
        objects: regions with images to draw from (each pasted object is drawn from these).
        rng: the only source of randomness.
        distractor_sources: ``(sample id, image, label map)`` whose background pixels give the distractors' texture.
        sizes: observed objects (:class:`core.labels.sizes.ObjectSizes`) that ``size="data"`` /
            ``position="data"`` placements draw from; default: measured from ``objects`` in their sources.
        stuff: class indices that are regions, not objects: the background's pixels of these classes are not
            protected by ``background_overlap``.
        known_objects: the background's objects found before (:func:`background_objects` of the same map and
            stuff classes), to save finding them again for every composite onto the same background.
        redraw_sizes: draw a new size on every placement attempt (a last resort: it favours small sizes).

    Returns:
        the image, the label map (objects painted in pasting order: later ones occlude earlier ones) and one
        step record per pasted object or distractor.
    """
    if not objects:
        raise InvalidInput("compositing needs at least one object region to paste")
    if any(r.image is None for r in objects):
        raise InvalidInput("object regions must carry their image pixels")
    image = np.array(background, dtype=np.uint8, copy=True)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInput(f"background must be H x W x 3 uint8, got shape {image.shape}")
    if labels is None:
        label_map = np.full(image.shape[:2], ignore_index, np.uint8)
    else:
        label_map = np.array(labels, dtype=np.uint8, copy=True)
    if label_map.shape != image.shape[:2]:
        raise InvalidInput(
            f"background label map is {label_map.shape[1]}x{label_map.shape[0]}, the image {image.shape[1]}x{image.shape[0]}"
        )
    taken = np.zeros(label_map.shape, bool)
    steps: list[dict] = []
    pad = params.reach() + 1
    if sizes is None and params.placement.uses_data:
        from core.labels.sizes import ObjectSizes

        sizes = ObjectSizes.from_regions(objects)
    if params.background_overlap >= 1 or labels is None:
        background = None
    elif known_objects is not None:
        background = known_objects.fresh(params.background_overlap)
    else:
        background = background_objects(labels, set(stuff), params.background_overlap, ignore_index)
    for _ in range(params.distractors):
        steps.append(_distractor(image, label_map, objects, distractor_sources, params, rng, pad, sizes))
    for _ in range(int(rng.integers(params.objects[0], params.objects[1] + 1))):
        region = objects[int(rng.integers(len(objects)))]
        placed = place_region(region, label_map, taken, params.placement, params.limits(), rng, pad=pad, sizes=sizes,
                              background=background, redraw_sizes=redraw_sizes)  # fmt: skip
        if placed is None:
            steps.append(
                {"region": region.record(), "skipped": "no placement within the truncation and overlap limits"}
            )
            continue
        transform, warped, allowed, hides = placed
        warped = warp_image(region, transform, warped)
        x0, y0, x1, y1 = warped.window
        used = _blend_into(image, warped, allowed, params, rng)
        label_map[y0:y1, x0:x1][allowed] = region.class_index
        taken[y0:y1, x0:x1] |= allowed
        step = {"region": region.record(), "transform": transform.record(), "pixels": int(allowed.sum()), "blending": used}
        if hides is not None:
            background.hidden += hides
            step["background_hidden"] = int(hides.sum())
        steps.append(step)
    return Recombined(label_map, image, steps)


def _distractor(image, label_map, objects, sources, params: CompositeParams, rng, pad: int, sizes=None) -> dict:
    """Paste one background-textured, object-shaped cut-out into background pixels (labels unchanged)."""
    if not sources:
        return {"distractor": True, "skipped": "no source images for background texture"}
    shape = objects[int(rng.integers(len(objects)))]
    src_id, src_image, src_labels = sources[int(rng.integers(len(sources)))]
    h, w = shape.mask.shape
    if h > src_image.shape[0] or w > src_image.shape[1]:
        return {"distractor": True, "skipped": "shape larger than the texture source"}
    for _ in range(params.attempts):
        y = int(rng.integers(0, src_image.shape[0] - h + 1))
        x = int(rng.integers(0, src_image.shape[1] - w + 1))
        if (src_labels[y : y + h, x : x + w][shape.mask] == 0).mean() >= 0.9:
            break
    else:
        return {"distractor": True, "skipped": "no background area of that shape in the texture source"}
    texture = Region("distractor", 0, None, (x, y, x + w, y + h), shape.mask, src_image[y : y + h, x : x + w].copy(),
                     src_image.shape[:2])  # fmt: skip
    placed = place_region(texture, label_map, np.zeros(label_map.shape, bool), params.placement, params.limits(), rng,
                          pad=pad, sizes=sizes)  # fmt: skip
    if placed is None:
        return {"distractor": True, "skipped": "no placement"}
    transform, warped = placed.transform, warp_image(texture, placed.transform, placed.warped)
    x0, y0, x1, y1 = warped.window
    allowed = warped.mask & (label_map[y0:y1, x0:x1] == 0)
    used = _blend_into(image, warped, allowed, params, rng)
    return {"distractor": True, "shape": shape.record(), "texture_sample": src_id, "texture_bbox": [x, y, x + w, y + h],
            "transform": transform.record(), "pixels": int(allowed.sum()), "blending": used}  # fmt: skip


# ---- over a dataset ------------------------------------------------------------------------------


BACKGROUND_POOLS = ("labelled", "all")


@dataclass(frozen=True)
class CompositeRequest:
    """What to composite over a dataset.

    Attributes:
        classes: class names whose regions are pasted (all classes present when empty).
        count: images to make.
        seed: base seed; image ``i`` uses ``numpy.random.default_rng([seed, i])``.
        params: the compositor's settings.
        backgrounds: sample ids used as backgrounds (their label maps kept); default the whole pool.
        background_pool: ``labelled`` (only samples with a label map, the default) or ``all`` (unlabelled
            images too: their pixels outside pasted objects are labelled 255, ignore, never background).
        min_area: smallest object region used, in pixels.
        stuff: class names that are regions, never cut out as objects; ``None``: the dataset's roles (its
            class set's, or the edits saved in the workspace, see :mod:`core.labels.roles`).
        paste_stuff: allow naming stuff classes in ``classes`` (they are pasted like objects then).
    """

    classes: tuple[str, ...] = ()
    count: int = 1
    seed: int = 0
    params: CompositeParams = field(default_factory=CompositeParams)
    backgrounds: tuple[str, ...] | None = None
    min_area: int = 64
    background_pool: str = "labelled"
    stuff: tuple[str, ...] | None = None
    paste_stuff: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 1_000_000:
            raise InvalidInput(f"count must be 1..1000000, got {self.count}")
        if self.background_pool not in BACKGROUND_POOLS:
            raise InvalidInput(
                f"background pool must be one of {', '.join(BACKGROUND_POOLS)}, got {self.background_pool!r}"
            )


UNLABELLED_RULE = "unlabelled background: pixels outside pasted objects are 255 (ignore)"
LABELLED_RULE = "labelled background: its label map kept under the pasted objects"


def background_pool(library, request: CompositeRequest) -> list[str]:
    """The samples a request may use as backgrounds (unlabelled ones only when asked for)."""
    store = library.store
    labelled = set(library.present)
    if request.backgrounds:
        unknown = [b for b in request.backgrounds if b not in store.ids]
        if unknown:
            raise InvalidInput(f"unknown background samples: {', '.join(unknown[:10])}")
        unlabelled = [b for b in request.backgrounds if b not in labelled]
        if unlabelled and request.background_pool != "all":
            raise InvalidInput(
                f"backgrounds without a usable label map: {', '.join(unlabelled[:10])}; compositing onto them "
                "would label their pixels as background. Allow unlabelled backgrounds (--backgrounds all) to "
                "label those pixels 255 (ignore) instead"
            )
        return list(request.backgrounds)
    if request.background_pool == "all":
        return list(store.ids)
    pool = [i for i in store.ids if i in labelled]
    if not pool:
        raise InvalidInput(
            f"{store.root} has no labelled sample to use as a background; annotate one, or allow unlabelled "
            "backgrounds (--backgrounds all: their pixels outside pasted objects become 255, ignore)"
        )
    return pool


def _draw_background(library, pool: list[str], rng: np.random.Generator, labelled_only: bool):
    """``(id, image, label map or None)`` of a readable background drawn from ``pool``; unreadable samples
    (and, when ``labelled_only``, samples whose label map is unusable) are skipped and reported."""
    from core.errors import StudioError
    from core.store import Problem

    remaining = list(pool)
    while remaining:
        sample_id = remaining.pop(int(rng.integers(len(remaining))))
        try:
            data = library.store.read(sample_id)
        except StudioError as exc:
            library.skipped.add(Problem("", str(exc), sample_id))
            continue
        if data.label_problem and labelled_only:
            library.skipped.add(Problem(str(data.sample.label_path or data.sample.image_path), data.label_problem, sample_id))
            continue
        return sample_id, data.image, data.label_map
    raise InvalidInput(f"none of the {len(pool)} background samples could be read; {library.skipped.summary()}")


def composite_sample(library, request: CompositeRequest, index: int, seed_sequence: list[int] | None = None):
    """Result ``index`` of a request as a :class:`core.labels.recombine.RecombinedSample`.

    Args:
        seed_sequence: the entropy of the result's generator (default ``[request.seed, index]``); batch exports
            pass ``[seed, step, index]``. It is recorded.
    """
    from core.labels.recombine import RecombinedSample

    store = library.store
    classes = store.classes
    stuff = library.stuff() if request.stuff is None else tuple(sorted(classes.index_of(n) for n in request.stuff))
    wanted = _wanted_classes(library, request, stuff)
    objects = [r for c in wanted for r in library.components(c)]
    seeds = list(seed_sequence) if seed_sequence is not None else [request.seed, index]
    rng = np.random.default_rng(seeds)
    pool = background_pool(library, request)
    sources = []
    if request.params.distractors:
        sources = [(i, image, lm) for i, lm, image in library.loadable(sorted(library.present)[:8])]
    sizes = library.sizes(exclude=stuff) if request.params.placement.uses_data else None
    if sizes is not None and not len(sizes):
        raise InvalidInput(f"{store.root} has no object of at least {library.min_area} px to measure sizes from")
    for attempt in range(BACKGROUND_TRIES):  # a background with no room for any object is drawn again
        background_id, background, labels = _draw_background(library, pool, rng, request.background_pool != "all")
        known = _known_objects(library, background_id, labels, stuff, request.params.background_overlap)
        result = composite(background, labels, [o for o in objects if o.source_id != background_id] or objects,
                           request.params, rng, distractor_sources=sources, ignore_index=classes.ignore_index,
                           sizes=sizes, stuff=stuff, known_objects=known,
                           redraw_sizes=attempt >= BACKGROUND_TRIES // 2)  # fmt: skip
        if any("skipped" not in step for step in result.steps):
            break
    else:
        raise SampleProblem(f"composite {index}: no object fitted on {BACKGROUND_TRIES} backgrounds within the "
                            "truncation and overlap limits (raise max_overlap / background_overlap, or narrow the "
                            "area shares)")  # fmt: skip
    record = {"id": f"composite_{index:06d}", "mode": "composite", "seed": request.seed, "index": index,
              "seed_sequence": seeds, "stuff": [classes.names[c] for c in stuff],
              "background": background_id, "params": request.params.record(), "steps": result.steps,
              "labels": LABELLED_RULE if labels is not None else UNLABELLED_RULE,
              "classes": [classes.names[c] for c in sorted(set(np.unique(result.label_map).tolist()) - {classes.ignore_index})]}  # fmt: skip
    if sizes is not None:
        record["sizes"] = {"from": "dataset label maps", "objects": len(sizes), "min_area": library.min_area}
    return RecombinedSample(record["id"], result, record)


def composite_or_skip(library, request: CompositeRequest, index: int):
    """:func:`composite_sample`, or ``None`` when nothing fitted (reported in ``library.skipped``): one failed
    composite never stops a batch."""
    from core.labels.recombine import made_or_skipped

    return made_or_skipped(library, f"composite_{index:06d}", composite_sample, request, index)


def _known_objects(library, background_id: str, labels, stuff: tuple[int, ...], background_overlap: float):
    """The background's own objects (cached per background), or ``None`` when they need not be respected."""
    if labels is None or background_overlap >= 1:
        return None
    cache = library.cache
    key = ("background objects", background_id, stuff)
    if key not in cache:
        if len(cache) >= 64:
            cache.pop(next(iter(cache)))
        cache[key] = background_objects(labels, set(stuff), background_overlap, library.store.classes.ignore_index)
    return cache[key]


def _wanted_classes(library, request: CompositeRequest, stuff: tuple[int, ...]) -> list[int]:
    """The classes to paste: the named ones, or every labelled class that is not background or stuff."""
    classes = library.store.classes
    if request.classes:
        wanted = [classes.index_of(n) for n in request.classes]
        named_stuff = [classes.names[c] for c in wanted if c in stuff]
        if named_stuff and not request.paste_stuff:
            raise InvalidInput(
                f"{', '.join(named_stuff)} {'is' if len(named_stuff) == 1 else 'are'} marked stuff (a region, never cut "
                "out as an object); mark it a thing in the class roles, or allow pasting stuff (paste_stuff)"
            )
        return wanted
    present = sorted(set().union(*library.present.values())) if library.present else []
    wanted = [c for c in present if c not in (0, classes.ignore_index) and c not in stuff]
    if not wanted:
        raise InvalidInput(f"{library.store.root} has no labelled object (a thing class) to cut out; annotate some "
                           "samples first, or mark a class as a thing in the class roles")  # fmt: skip
    return wanted


def pasted_shares(sample) -> list[float]:
    """Area shares (pixels pasted over the image's pixels) of the objects pasted in one composite result
    (a :class:`core.labels.recombine.RecombinedSample`); skipped objects and distractors left out."""
    h, w = sample.result.label_map.shape
    return [s["pixels"] / (h * w) for s in sample.record["steps"] if "pixels" in s and not s.get("distractor")]
