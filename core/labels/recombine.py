"""Recombining a dataset's label maps: overlay (single / multi label) and reconstruction, seeded, with
outputs written as a VOC-layout dataset and a provenance manifest.

Every result ``i`` of a run draws from its own generator ``numpy.random.default_rng([seed, i])``, so the
same seed gives byte-identical outputs and any single result can be reproduced from its manifest line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput, SampleProblem
from core.labels.overlay import Placement, Recombined, band_map, overlay, reconstruct
from core.labels.regions import FRAGMENT_SHARE, Region, class_components
from core.progress import CancelToken, ProgressFn, track
from core.store import DatasetStore, SkipReport
from core.types import ClassSet

MODES = ("overlay", "multi", "reconstruct")


@dataclass(frozen=True)
class RecombineRequest:
    """What to recombine.

    Attributes:
        mode: ``overlay`` (one region of one class onto a map lacking it), ``multi`` (one region of each
            listed class the target lacks) or ``reconstruct`` (a base plus one region of each class, in
            layer order).
        classes: class names (the rare classes to add).
        count: number of results.
        seed: base seed.
        placement: where and how regions are pasted.
        targets: sample ids to paste onto (default: every labelled sample lacking the class); in
            ``reconstruct`` mode, the maps a base is drawn from (default: every labelled map).
        bands: for ``reconstruct``: ``(class name, share)`` bands for the base instead of dataset maps.
        min_area: components smaller than this many pixels are not used as regions.
        layers: for ``reconstruct``: exact regions ``(sample id, class name, component)`` pasted in this
            order (first lowest), instead of one random region per class.
        background_overlap: ``overlay`` / ``multi`` with a random placement: largest share of each of the
            target's own objects that pasted regions may hide (1: no limit); as in compositing.
    """

    mode: str
    classes: tuple[str, ...]
    count: int = 1
    seed: int = 0
    placement: Placement = field(default_factory=Placement)
    targets: tuple[str, ...] | None = None
    bands: tuple[tuple[str, float], ...] | None = None
    min_area: int = 64
    layers: tuple[tuple[str, str, int], ...] | None = None
    background_overlap: float = 0.3

    def __post_init__(self) -> None:
        if not 0 <= self.background_overlap <= 1:
            raise InvalidInput(f"background_overlap must be 0..1 (a share of each object), got {self.background_overlap}")
        if self.mode not in MODES:
            raise InvalidInput(f"unknown recombination mode {self.mode!r}; accepted: {', '.join(MODES)}")
        if not self.classes and not self.layers:
            raise InvalidInput("name at least one class to add (--class NAME)")
        if self.layers is not None and self.mode != "reconstruct":
            raise InvalidInput("explicit layers are for reconstruct mode only")
        if not 1 <= self.count <= 1_000_000:
            raise InvalidInput(f"count must be 1..1000000, got {self.count}")
        if self.bands is not None and self.mode != "reconstruct":
            raise InvalidInput("bands are a base for reconstruct mode only")

    def record(self) -> dict:
        return {"mode": self.mode, "classes": list(self.classes), "count": self.count, "seed": self.seed,
                "placement": self.placement.record(), "targets": list(self.targets) if self.targets else None,
                "bands": [list(b) for b in self.bands] if self.bands else None, "min_area": self.min_area,
                "layers": [list(layer) for layer in self.layers] if self.layers else None}  # fmt: skip


@dataclass
class RecombinedSample:
    """One result: the recombined map and image, and its provenance record (a manifest line)."""

    id: str
    result: Recombined
    record: dict
    kept_as: str | None = None  # the id it was kept under, once kept


class RegionLibrary:
    """Loads sample maps and images on demand through the store and keeps their class components (small
    crops). Samples that cannot be read are skipped and listed in ``skipped`` (and the store's problems).

    Only samples with a usable label map take part: an unlabelled image is never a source or a target.
    """

    def __init__(self, store: DatasetStore, min_area: int = 64):
        self.dataset = store
        self.store = store
        self.min_area = min_area
        self.skipped = SkipReport()
        self.present = store.label_classes()
        self.version = store.version
        self._components: dict[int, list[Region]] = {}
        self._colors: dict[int, np.ndarray] = {}
        self._sizes = None
        self._stuff: tuple[int, ...] | None = None
        self.cache: dict = {}  # small derived data of loaded samples (e.g. a background's objects)

    def stuff(self) -> tuple[int, ...]:
        """The dataset's stuff classes (class set roles, or the workspace edits), read once per library."""
        if self._stuff is None:
            from core.labels.roles import stuff_classes

            self._stuff = stuff_classes(self.store)
        return self._stuff

    def sizes(self, exclude=()):
        """Objects observed in the dataset's label maps (:class:`core.labels.sizes.ObjectSizes`, measured once
        per library, cached per map in the workspace), without the ``exclude`` classes."""
        from core.labels.sizes import measure_store

        if self._sizes is None:
            self._sizes = {"all": measure_store(self.store, self.min_area, self.skipped)}
        key = tuple(sorted(exclude))
        if key not in self._sizes:
            self._sizes[key] = self._sizes["all"].without(key)
        return self._sizes[key]

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A sample's ``(label map, image)``.

        Raises:
            InvalidInput: the sample has no usable label map, or cannot be read.
        """
        data = self.store.read(sample_id)
        if data.label_map is None:
            raise InvalidInput(data.label_problem or f"sample {sample_id!r} has no label map")
        return data.label_map, data.image

    def draw_readable(self, rng: np.random.Generator, pool: Sequence[str]) -> tuple[str, np.ndarray, np.ndarray]:
        """Draw a sample from ``pool`` with ``rng``; one that cannot be read is skipped (and reported) and
        another drawn, so one bad file never stops a batch.

        Raises:
            InvalidInput: no sample of the pool can be read.
        """
        remaining = list(pool)
        while remaining:
            sample_id = remaining.pop(int(rng.integers(len(remaining))))
            loaded = self.loadable([sample_id])
            if loaded:
                return loaded[0]
        raise InvalidInput(f"none of the {len(pool)} candidate samples could be read; {self.skipped.summary()}")

    def loadable(self, sample_ids) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(id, label map, image)`` for each readable sample of ``sample_ids``; the others are skipped."""
        return [(d.id, d.label_map, d.image) for d in self.store.each(sample_ids, skipped=self.skipped)]

    def holders(self, cls: int) -> list[str]:
        return sorted(s for s, present in self.present.items() if cls in present)

    def components(self, cls: int) -> list[Region]:
        """Every component of ``cls`` (at least ``min_area`` pixels) over the dataset, in a stable order."""
        if cls not in self._components:
            regions: list[Region] = []
            for sample_id, label_map, image in self.loadable(self.holders(cls)):
                regions += class_components(label_map, cls, image=image, source_id=sample_id, min_area=self.min_area,
                                            fragment_share=FRAGMENT_SHARE)  # fmt: skip
            self._components[cls] = regions
        if not self._components[cls]:
            raise InvalidInput(
                f"class {self.dataset.classes.names[cls]!r} has no region of at least {self.min_area} pixels in "
                f"{self.dataset.root}; nothing to paste"
            )
        return self._components[cls]

    def region(self, sample_id: str, cls: int, component: int) -> Region:
        """One named component (as numbered in :meth:`components`: largest first within its sample)."""
        for region in self.components(cls):
            if region.source_id == sample_id and region.component == component:
                return region
        raise InvalidInput(
            f"no region #{component + 1} of class {self.dataset.classes.names[cls]!r} in sample {sample_id!r} "
            f"(regions smaller than {self.min_area} px are not used)"
        )

    def mean_color(self, cls: int) -> np.ndarray:
        """The mean RGB colour of ``cls`` over up to 20 maps holding it (grey when none does)."""
        if cls not in self._colors:
            total, pixels = np.zeros(3), 0
            for _, label_map, image in self.loadable(self.holders(cls)[:20]):
                mask = label_map == cls
                total += image[mask].sum(axis=0)
                pixels += int(mask.sum())
            self._colors[cls] = (total / pixels).astype(np.uint8) if pixels else np.array([128, 128, 128], np.uint8)
        return self._colors[cls]


def _targets(library: RegionLibrary, request: RecombineRequest, wanted: list[int]) -> list[str]:
    labelled = sorted(library.present)
    if request.targets:
        missing = [t for t in request.targets if t not in library.present]
        if missing:
            raise InvalidInput(f"target samples without a label map or unknown: {', '.join(missing[:10])}")
        return list(request.targets)
    if request.mode == "overlay":
        return labelled  # filtered per result by the class drawn
    return [s for s in labelled if not set(wanted) <= library.present[s]]


TARGET_TRIES = 4  # target maps drawn for one overlay before it is given up (no room on any)


def recombine_one(
    library: RegionLibrary, request: RecombineRequest, index: int, seed_sequence: list[int] | None = None
) -> RecombinedSample:
    """Result number ``index`` of a request (deterministic for a given seed and index).

    Args:
        seed_sequence: the entropy of the result's generator (default ``[request.seed, index]``); recorded.
    """
    classes = library.dataset.classes
    wanted = [classes.index_of(name) for name in request.classes]
    seeds = list(seed_sequence) if seed_sequence is not None else [request.seed, index]
    rng = np.random.default_rng(seeds)
    record = {"id": f"{request.mode}_{index:06d}", "mode": request.mode, "seed": request.seed, "index": index,
              "seed_sequence": seeds, "placement": request.placement.record()}  # fmt: skip
    if request.mode == "reconstruct":
        base_record, base, base_image = _base(library, request, rng)
        if request.layers:
            regions = [
                library.region(sample_id, classes.index_of(name), component)
                for sample_id, name, component in request.layers
            ]
        else:
            regions = [_pick(rng, library.components(c), exclude=base_record.get("sample")) for c in wanted]
        sizes = _sizes_for(library, regions, request.placement)
        result = reconstruct(
            base, regions, request.placement, rng, base_image=base_image, ignore_index=classes.ignore_index, sizes=sizes
        )
        record["base"] = base_record
    else:
        pool = _targets(library, request, wanted)
        if request.mode == "overlay":
            cls = wanted[int(rng.integers(len(wanted)))]
            pool = [s for s in pool if cls not in library.present[s]] if not request.targets else pool
            chosen_classes = [cls]
        if not pool:
            names = ", ".join(request.classes)
            raise InvalidInput(f"no labelled map lacks {names}: every map already holds it, nothing to overlay onto")
        for attempt in range(TARGET_TRIES):  # a target with no room for the regions is drawn again
            target_id, target, target_image = library.draw_readable(rng, pool)
            if request.mode == "multi":
                chosen_classes = [c for c in wanted if c not in library.present[target_id]] or wanted
            regions = [_pick(rng, library.components(c), exclude=target_id) for c in chosen_classes]
            result = overlay(
                target, regions, request.placement, rng, target_image=target_image, ignore_index=classes.ignore_index,
                sizes=_sizes_for(library, regions, request.placement), background_overlap=request.background_overlap,
                stuff=library.stuff(), redraw_sizes=attempt >= TARGET_TRIES // 2,
            )
            if any("skipped" not in step for step in result.steps):
                break
        else:
            raise SampleProblem(f"{record['id']}: no region fitted on {TARGET_TRIES} target maps without hiding more "
                                f"than {request.background_overlap:.0%} of one of their objects (raise the hidden "
                                "share, or narrow the region sizes)")  # fmt: skip
        record["target"] = target_id
    record["steps"] = result.steps
    record["classes"] = [
        classes.names[c] for c in sorted(set(np.unique(result.label_map).tolist()) - {classes.ignore_index})
    ]
    return RecombinedSample(record["id"], result, record)


def _pick(rng: np.random.Generator, regions: Sequence[Region], exclude: str | None) -> Region:
    pool = [r for r in regions if r.source_id != exclude] or list(regions)
    return pool[int(rng.integers(len(pool)))]


def _sizes_for(library: RegionLibrary, regions, placement: Placement):
    """Observed objects to draw sizes / positions from: every thing class, plus the classes being pasted
    even when they are stuff (a region of sky pasted on purpose takes the size of the data's sky)."""
    if not placement.uses_data:
        return None
    pasted = {r.class_index for r in regions}
    return library.sizes(exclude=tuple(c for c in library.stuff() if c not in pasted))


def _base(library: RegionLibrary, request: RecombineRequest, rng: np.random.Generator):
    classes = library.dataset.classes
    if request.bands:
        bands = [(classes.index_of(name), float(share)) for name, share in request.bands]
        shape = (512, 512)
        base = band_map(shape, bands)
        image = np.zeros(shape + (3,), np.uint8)
        for cls, _ in bands:
            image[base == cls] = library.mean_color(cls)
        noise = rng.normal(0, 6, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        return {"bands": [[classes.names[c], s] for c, s in bands], "shape": list(shape)}, base, image
    pool = sorted(request.targets) if request.targets else sorted(library.present)
    if not pool:
        raise InvalidInput(
            f"{library.dataset.root} has no labelled map to use as a base; give --band CLASS:SHARE instead"
        )
    base_id, base, image = library.draw_readable(rng, pool)
    return {"sample": base_id}, base, image


def recombine(
    dataset: DatasetStore,
    request: RecombineRequest,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[RecombinedSample]:
    """All ``request.count`` results of a request."""
    library = RegionLibrary(dataset, request.min_area)
    made = [recombine_or_skip(library, request, i) for i in track(range(request.count), progress=progress,
                                                                  cancel=cancel, message="recombining")]  # fmt: skip
    return [sample for sample in made if sample is not None]


def recombine_or_skip(library: RegionLibrary, request: RecombineRequest, index: int) -> RecombinedSample | None:
    """:func:`recombine_one`, or ``None`` when no region fitted (reported in ``library.skipped``): one failed
    result never stops a batch."""
    return made_or_skipped(library, f"{request.mode}_{index:06d}", recombine_one, request, index)


def made_or_skipped(library: RegionLibrary, result_id: str, make, *args) -> RecombinedSample | None:
    """``make(library, *args)``, or ``None`` when it raised :class:`SampleProblem` (recorded in
    ``library.skipped`` under ``result_id``): shared by recombination and compositing batches."""
    from core.store import Problem

    try:
        return make(library, *args)
    except SampleProblem as exc:
        library.skipped.add(Problem("", str(exc), result_id))
        return None


# ---- writing ------------------------------------------------------------------------------------


def write_samples(
    out: str | Path, classes: ClassSet, samples: Sequence[RecombinedSample], *, append: bool = False
) -> Path:
    """Write results as a VOC-layout dataset: ``JPEGImages/``, ``SegmentationClass/``, ``classes.json`` and
    ``manifest.jsonl`` (one line per sample, keys sorted, no timestamps: same inputs, same bytes).

    Args:
        append: add to an existing output folder (ids must be new) instead of refusing a non-empty one.

    Returns:
        the manifest path.
    """
    from core.io.atomic import atomic_write_text
    from core.io.images import save_image, save_label_map

    out = Path(out)
    manifest = out / "manifest.jsonl"
    existing = manifest.read_text(encoding="utf-8").splitlines() if manifest.is_file() else []
    if existing and not append:
        raise InvalidInput(f"{out} already holds a manifest; choose an empty folder (nothing was overwritten)")
    known = {json.loads(line)["id"] for line in existing if line.strip()}
    clashes = [s.id for s in samples if s.id in known]
    if clashes:
        raise InvalidInput(f"{out} already holds samples {', '.join(clashes[:5])}; nothing was overwritten")
    for sample in samples:
        save_label_map(out / "SegmentationClass" / f"{sample.id}.png", sample.result.label_map, classes)
        if sample.result.image is not None:
            save_image(out / "JPEGImages" / f"{sample.id}.jpg", sample.result.image)
    if not (out / "classes.json").is_file():
        classes.save(out / "classes.json")
    lines = existing + [json.dumps(s.record, sort_keys=True) for s in samples]
    atomic_write_text(manifest, "\n".join(lines) + "\n")
    return manifest


def renamed(sample: RecombinedSample, new_id: str) -> RecombinedSample:
    """The same result under another id (the seed and index in its record still reproduce it)."""
    return RecombinedSample(new_id, sample.result, {**sample.record, "id": new_id})


def keep_samples(out: str | Path, classes: ClassSet, chosen: Sequence[RecombinedSample]) -> list[str]:
    """Append results to an output folder as new samples ``kept_<mode>_<n>`` (numbered after the ones
    already there; the seed and index in each record still reproduce it); returns their ids."""
    start = kept_count(out)
    kept = [renamed(s, f"kept_{s.record['mode'].replace('-', '_')}_{start + k + 1:06d}") for k, s in enumerate(chosen)]
    write_samples(out, classes, kept, append=True)
    return [s.id for s in kept]


def keep_once(
    out: str | Path, classes: ClassSet, results: Sequence[RecombinedSample], indices: Sequence[int] | None
) -> tuple[list[str], list[str]]:
    """Keep previewed results (all when ``indices`` is None) as new samples, each at most once: a result kept
    before is not written again.

    Returns:
        ``(ids of the samples written now, ids the other chosen results were kept under before)``.

    Raises:
        InvalidInput: nothing chosen.
    """
    chosen = list(results) if indices is None else [results[i] for i in indices if 0 <= i < len(results)]
    if not chosen:
        raise InvalidInput("select a preview in the gallery first")
    fresh = [r for r in chosen if r.kept_as is None]
    before = [r.kept_as for r in chosen if r.kept_as is not None]
    new = keep_samples(out, classes, fresh) if fresh else []
    for result, new_id in zip(fresh, new, strict=True):
        result.kept_as = new_id
    return new, before  # type: ignore[return-value]


def kept_count(out: str | Path) -> int:
    """How many samples an output folder's manifest lists."""
    manifest = Path(out) / "manifest.jsonl"
    if not manifest.is_file():
        return 0
    return sum(1 for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip())


def read_manifest(out: str | Path) -> dict[str, dict]:
    """Sample id -> manifest record of an output folder."""
    manifest = Path(out) / "manifest.jsonl"
    if not manifest.is_file():
        return {}
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in records}


def next_index(out: str | Path, mode: str) -> int:
    """The first free result index for ``mode`` in an output folder (for appending kept results)."""
    manifest = Path(out) / "manifest.jsonl"
    if not manifest.is_file():
        return 0
    used = [json.loads(line).get("index", -1) for line in manifest.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("mode") == mode]  # fmt: skip
    return max(used, default=-1) + 1
