"""The ``gan`` generator backend: samples from a GAN trained on the user's own data (:mod:`core.train`).

A run folder (written by ``segstudio train --out RUN`` or the Train tab, by default under
:func:`core.train.runs.runs_root`) is the "model":

- a ``label2image`` run keeps a label map exactly (a dataset sample's, or a recombined one) and makes its image;
- a ``pair`` run makes new ``(image, label map)`` samples (labels only in the classes the run saw).

Seeds: sample ``i`` of a request with seed ``S`` is made with seed ``S + i`` by a one-sample call (as the
diffusion backends do), so it does not depend on how many samples are asked for; its record holds that seed
with the run folder, the checkpoint's sha256 and step (``GanModel.record``), so
``load_run(run).generate_from_maps([label_map], seed)[0]`` (or ``generate_pairs(1, seed)[0]``) makes it again.

Loaded generators are kept in a small LRU (keyed by the run folder, its checkpoint and the device), so a batch
loads a run once; a run that trained on (a new checkpoint) is loaded afresh.

torch is imported only when a run is loaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ImageLoadError, InvalidInput, ModelUnavailable, SampleProblem, StudioError
from core.progress import CancelToken, ProgressFn, no_progress
from core.types import ClassSet

if TYPE_CHECKING:
    from core.labels.recombine import RecombinedSample
    from core.store import DatasetStore, SkipReport
    from core.train.generation import GanModel

KINDS = ("label2image", "pair")
CACHE_CAPACITY = 2
ACCEPTED_RUN = ("a run folder written by `segstudio train --out RUN` or the Train tab (config.json, checkpoint.json "
                "and checkpoints/)")  # fmt: skip


@dataclass(frozen=True)
class GanSettings:
    """What a GAN request makes.

    Attributes:
        run: the run folder.
        count: label2image: images per label map (one sample's variations) or samples over a dataset; pair: new
            samples.
        seed: sample ``i`` uses seed ``seed + i``.
        ema: use the EMA generator (default) rather than the raw one.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None``: ``$SEGSTUDIO_DEVICE`` or auto.
    """

    run: str
    count: int = 4
    seed: int = 0
    ema: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if not str(self.run).strip():
            raise InvalidInput(f"the gan backend needs a run folder; accepted: {ACCEPTED_RUN}")
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or not 1 <= self.count <= 100_000:
            raise InvalidInput(f"count must be an integer 1..100000, got {self.count!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InvalidInput(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class RunFacts:
    """What a run folder says about itself, read without torch.

    Attributes:
        path: the run folder (resolved); kind: ``label2image`` or ``pair``; size: its training side; step: the
        latest checkpoint's step; classes: the class set it was trained with; present: the class indices that
        occurred in its training label maps (a pair run makes only these; a label2image run knows only these).
    """

    path: Path
    kind: str
    size: int
    step: int
    classes: ClassSet
    present: tuple[int, ...]

    def class_names(self, indices) -> str:
        return ", ".join(self.classes.names[i] if 0 <= i < len(self.classes.names) else str(i) for i in indices)


def _read_json(path: Path, what: str, run: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelUnavailable(f"GAN run {run}: its {what} ({path.name}) cannot be read ({exc}); the folder is "
                               f"damaged or not a run. Accepted: {ACCEPTED_RUN}") from None  # fmt: skip
    if not isinstance(doc, dict):
        raise ModelUnavailable(f"GAN run {run}: its {path.name} is not a JSON object; accepted: {ACCEPTED_RUN}")
    return doc


def read_run(run: str | Path) -> RunFacts:
    """Check a run folder and read what it is (no torch, no weights read).

    Raises:
        ModelUnavailable: the folder is missing, is not a run, holds no checkpoint yet, or its files are damaged;
            the message names the folder and what is accepted.
    """
    if not str(run).strip():
        raise ModelUnavailable(f"no GAN run given; accepted: {ACCEPTED_RUN}")
    path = Path(run).expanduser()
    if not path.is_dir():
        raise ModelUnavailable(f"GAN run {path} is not a folder (missing or moved); accepted: {ACCEPTED_RUN}")
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"{path} is not a GAN run (no config.json); accepted: {ACCEPTED_RUN}")
    config = _read_json(path / "config.json", "settings", path)
    if not (path / "checkpoint.json").is_file():
        raise ModelUnavailable(f"GAN run {path} has no checkpoint yet (checkpoint.json missing): let its training "
                               f"reach a checkpoint (Train tab, or `segstudio train ... --out {path} --resume`), "
                               "or pick a run that has one")  # fmt: skip
    doc = _read_json(path / "checkpoint.json", "checkpoint record", path)
    try:
        kind = str(doc.get("config", config)["kind"])
        classes = ClassSet.from_json(doc["classes"])
        present = tuple(int(i) for i in doc["present"])
        step, size = int(doc["step"]), int(doc.get("config", config)["size"])
        doc["folder"], doc["nets"]  # noqa: B018 - both must be there
    except (KeyError, TypeError, ValueError, StudioError) as exc:
        raise ModelUnavailable(f"GAN run {path}: checkpoint.json is incomplete or damaged ({type(exc).__name__}: "
                               f"{exc}); accepted: {ACCEPTED_RUN}") from None  # fmt: skip
    if kind not in KINDS:
        raise ModelUnavailable(f"GAN run {path} is of kind {kind!r}; accepted: {', '.join(KINDS)}")
    return RunFacts(path, kind, size, step, classes, present)


def verify_weights(run: str | Path, *, ema: bool = True) -> RunFacts:
    """:func:`read_run`, then check that the generator's weights file exists and matches its recorded sha256
    (hashlib only; no torch).

    Raises:
        ModelUnavailable: as :func:`read_run`, or the weights file is missing or changed.
    """
    facts = read_run(run)
    doc = json.loads((facts.path / "checkpoint.json").read_text(encoding="utf-8"))
    name = "generator_ema" if ema else "generator"
    try:
        entry = doc["nets"][name]
        weights = facts.path / doc["folder"] / Path(entry["file"]).name
        recorded = entry["sha256"]
    except (KeyError, TypeError) as exc:
        raise ModelUnavailable(f"GAN run {facts.path}: checkpoint.json names no {name} weights ({exc})") from None
    if not weights.is_file():
        raise ModelUnavailable(f"GAN run {facts.path}: {weights} is missing; the checkpoint is incomplete (train on "
                               "with --resume, or pick another run)")  # fmt: skip
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != recorded:
        raise ModelUnavailable(f"GAN run {facts.path}: {weights} does not match the sha256 recorded in "
                               "checkpoint.json; the file was changed or damaged")  # fmt: skip
    return facts


def check_classes(facts: RunFacts, classes: ClassSet, where: str = "the dataset") -> None:
    """The run was trained with the same class set (names, order, ignore value) as ``classes``.

    Raises:
        InvalidInput: naming the run, both class lists and what is accepted.
    """
    if tuple(facts.classes.names) != tuple(classes.names) or facts.classes.ignore_index != classes.ignore_index:
        ours = ", ".join(classes.names)
        theirs = ", ".join(facts.classes.names)
        raise InvalidInput(f"GAN run {facts.path} was trained with the classes [{theirs}] (ignore "
                           f"{facts.classes.ignore_index}), but {where} has [{ours}] (ignore {classes.ignore_index}); "
                           "accepted: a run trained on a dataset with the same class set (train one in the Train "
                           "tab or with segstudio train --data DIR)")  # fmt: skip


def unseen_classes(facts: RunFacts, label_map: np.ndarray) -> list[int]:
    """Class values of ``label_map`` (``H x W uint8``; 255 ignored) that the run never saw in training."""
    values = np.flatnonzero(np.bincount(np.asarray(label_map).ravel(), minlength=256))
    return [int(v) for v in values if v != facts.classes.ignore_index and int(v) not in facts.present]


# ---- loading, with a small LRU ------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple, tuple[RunFacts, GanModel]] = OrderedDict()
_LOCK = threading.RLock()


def _checkpoint_key(path: Path) -> str:
    return hashlib.sha1((path / "checkpoint.json").read_bytes()).hexdigest()


def load_gan(
    run: str | Path, *, ema: bool = True, device: str | None = None, progress: ProgressFn | None = None
) -> tuple[RunFacts, GanModel]:
    """The run's facts and loaded generator, from the LRU or loaded now (on a device from
    :func:`core.device.resolve_policy`).

    Raises:
        ModelUnavailable: the run is missing, has no checkpoint, or its files are damaged (named in the message).
    """
    from core.device import resolve_policy

    facts = read_run(run)
    policy_device = resolve_policy(device).device
    key = (str(facts.path), _checkpoint_key(facts.path), bool(ema), policy_device)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        (progress or no_progress)(None, f"loading GAN run {facts.path.name}")
        from core.train.generation import load_run

        try:
            model = load_run(facts.path, ema=ema, device=policy_device)
        except StudioError as exc:
            raise ModelUnavailable(f"GAN run {facts.path} cannot be used: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - damaged or incompatible weights: say so, keep the cache as it was
            raise ModelUnavailable(f"GAN run {facts.path} could not be loaded ({type(exc).__name__}: {exc}); its "
                                   f"checkpoint is damaged or from another version. Accepted: {ACCEPTED_RUN}") from exc  # fmt: skip
        _CACHE[key] = (facts, model)
        while len(_CACHE) > CACHE_CAPACITY:
            _CACHE.popitem(last=False)
        return facts, model


def loaded_runs() -> list[str]:
    """Run folders of the generators in memory, least recently used first."""
    with _LOCK:
        return [key[0] for key in _CACHE]


def clear_cache() -> None:
    """Drop every loaded generator."""
    with _LOCK:
        _CACHE.clear()


# ---- one sample ------------------------------------------------------------------------------------------------


def image_for_map(facts: RunFacts, model: GanModel, label_map: np.ndarray, seed: int, *, name: str = "label map") -> np.ndarray:
    """A label2image run's image for a label map, which is not changed.

    Args:
        label_map: ``H x W uint8`` class indices of the run's class set, 255 = ignore.
        seed: the noise seed (the image is ``generate_from_maps([label_map], seed)[0]``).
        name: how errors call the map (a sample id).

    Returns:
        ``H x W x 3 uint8`` RGB, the map's size.

    Raises:
        InvalidInput: the run is a pair run.
        SampleProblem: the map holds classes the run never saw in training (batches skip such maps).
    """
    if facts.kind != "label2image":
        raise InvalidInput(f"GAN run {facts.path} is a {facts.kind} run: it makes new samples and cannot keep a given "
                           "label map; accepted here: a label2image run")  # fmt: skip
    unseen = unseen_classes(facts, label_map)
    if unseen:
        raise SampleProblem(f"{name} holds classes {facts.class_names(unseen)} ({unseen}) that GAN run "
                            f"{facts.path.name} never saw in training; accepted: maps of the classes it saw "
                            f"({facts.class_names(facts.present)}), or a run trained on data with those classes")  # fmt: skip
    return model.generate_from_maps([label_map], seed=int(seed))[0]


def pair_for_seed(facts: RunFacts, model: GanModel, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A pair run's new sample for a seed: ``(size x size x 3 uint8 RGB, size x size uint8 label map)``.

    Raises:
        InvalidInput: the run is a label2image run.
    """
    if facts.kind != "pair":
        raise InvalidInput(f"GAN run {facts.path} is a label2image run: it makes an image for a given label map; "
                           "accepted here: a pair run")  # fmt: skip
    return model.generate_pairs(1, seed=int(seed))[0]


def gan_record(model: GanModel, seed: int) -> dict:
    """The settings of one generated sample (run folder, checkpoint sha256 and step, kind, size, EMA, seed;
    ``index`` 0: the sample is the first of a one-sample call)."""
    return model.record(int(seed), 0)


def _sample(sample_id: str, label_map: np.ndarray, image: np.ndarray, record: dict) -> RecombinedSample:
    from core.labels.overlay import Recombined
    from core.labels.recombine import RecombinedSample

    return RecombinedSample(sample_id, Recombined(label_map, image, []), {"id": sample_id, **record})


# ---- requests over a dataset -----------------------------------------------------------------------------------


def generate_for_map(
    label_map: np.ndarray,
    settings: GanSettings,
    classes: ClassSet,
    *,
    source: str = "",
    index: int = 0,
    provenance: dict | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[RecombinedSample]:
    """``settings.count`` images for one label map (variations ``k`` with seeds ``settings.seed + k``), each
    paired with a copy of the map, byte-identical to it.

    Args:
        label_map: ``H x W uint8`` in ``classes`` (255 = ignore).
        classes: the class set the map belongs to (the run must share it).
        source: the sample (or recombined sample) the map comes from, for the records.
        index: the first result's number (ids ``gan_<index + k>``).
        provenance: extra record entries (e.g. the recombination that made the map).

    Raises:
        ModelUnavailable: the run cannot be used. InvalidInput: another class set, or a pair run.
        SampleProblem: the map holds classes the run never saw.
    """
    facts, model = load_gan(settings.run, ema=settings.ema, device=settings.device, progress=progress)
    check_classes(facts, classes)
    progress = progress or no_progress
    out = []
    for k in range(settings.count):
        if cancel is not None:
            cancel.raise_if_cancelled("generation")
        seed = settings.seed + k
        image = image_for_map(facts, model, label_map, seed, name=f"label map of {source!r}" if source else "label map")
        record = {"mode": "gan", "kind": facts.kind, "source": source, "seed": seed, "index": index + k,
                  "settings": gan_record(model, seed), **(provenance or {})}  # fmt: skip
        out.append(_sample(f"gan_{index + k:06d}", label_map.copy(), image, record))
        progress((k + 1) / settings.count, f"image {k + 1}/{settings.count}")
    return out


def generate_for_maps(
    maps: list[tuple[str, np.ndarray]],
    settings: GanSettings,
    classes: ClassSet,
    *,
    provenance: dict | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    skipped: SkipReport | None = None,
) -> list[RecombinedSample]:
    """``settings.count`` images over given label maps: sample ``i`` keeps map ``i mod len(maps)`` exactly and uses
    seed ``settings.seed + i``. A map holding classes the run never saw is skipped (listed in ``skipped``) and the
    next one used.

    Args:
        maps: ``(source name, H x W uint8 label map)`` pairs (recombined maps, say), in ``classes``.

    Raises:
        ModelUnavailable: the run cannot be used. InvalidInput: another class set, a pair run, no maps, or no map
            the run can use.
    """
    from dataclasses import replace

    from core.store import Problem, SkipReport

    if not maps:
        raise InvalidInput("no label maps given: a label2image GAN keeps label maps and makes their images")
    progress = progress or no_progress
    skipped = skipped if skipped is not None else SkipReport()
    bad: set[int] = set()
    out: list[RecombinedSample] = []
    for i in range(settings.count):
        one = replace(settings, seed=settings.seed + i, count=1)
        for offset in range(len(maps)):
            position = (i + offset) % len(maps)
            if position in bad:
                continue
            name, label_map = maps[position]
            try:
                out += generate_for_map(label_map, one, classes, source=name, index=i, provenance=provenance,
                                        cancel=cancel)  # fmt: skip
                break
            except SampleProblem as exc:
                bad.add(position)
                skipped.add(Problem("", str(exc), name))
        else:
            raise InvalidInput(f"none of the {len(maps)} label maps can be used by GAN run {settings.run}; "
                               f"{skipped.summary()}")  # fmt: skip
        progress((i + 1) / settings.count, f"image {i + 1}/{settings.count}")
    return out


def generate_pairs(
    settings: GanSettings,
    classes: ClassSet,
    *,
    index: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[RecombinedSample]:
    """``settings.count`` new samples of a pair run (sample ``k``: seed ``settings.seed + k``); label values are
    only the classes the run saw (never 255).

    Raises:
        ModelUnavailable: the run cannot be used. InvalidInput: another class set, or a label2image run.
    """
    facts, model = load_gan(settings.run, ema=settings.ema, device=settings.device, progress=progress)
    check_classes(facts, classes)
    progress = progress or no_progress
    out = []
    for k in range(settings.count):
        if cancel is not None:
            cancel.raise_if_cancelled("generation")
        seed = settings.seed + k
        image, label_map = pair_for_seed(facts, model, seed)
        record = {"mode": "gan", "kind": "pair", "source": "", "seed": seed, "index": index + k,
                  "settings": gan_record(model, seed)}  # fmt: skip
        out.append(_sample(f"gan_{index + k:06d}", label_map, image, record))
        progress((k + 1) / settings.count, f"sample {k + 1}/{settings.count}")
    return out


def generate_for_sample(
    dataset: DatasetStore,
    sample_id: str,
    settings: GanSettings,
    *,
    index: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[RecombinedSample]:
    """A label2image run: ``settings.count`` images for one sample's label map (kept exactly). A pair run:
    ``settings.count`` new samples (the sample is not used).

    Raises:
        SampleProblem: the sample has no usable label map, or holds classes the run never saw.
    """
    facts = read_run(settings.run)
    if facts.kind == "pair":
        return generate_pairs(settings, dataset.classes, index=index, progress=progress, cancel=cancel)
    label_map = dataset.label_map(sample_id)
    if label_map is None:
        raise SampleProblem(f"sample {sample_id!r} has no label map: a label2image GAN keeps the label map and makes "
                            "the image")  # fmt: skip
    return generate_for_map(label_map, settings, dataset.classes, source=sample_id, index=index, progress=progress,
                            cancel=cancel)  # fmt: skip


def generate_dataset(
    dataset: DatasetStore,
    settings: GanSettings,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    skipped: SkipReport | None = None,
) -> list[RecombinedSample]:
    """``settings.count`` samples. A label2image run: sample ``i`` keeps the label map of the ``i``-th labelled
    sample (cycling, in the dataset's order) and uses seed ``settings.seed + i``; a sample whose map cannot be read
    or holds classes the run never saw is skipped (listed in ``skipped``) and the next one used. A pair run:
    ``settings.count`` new samples.

    Raises:
        ModelUnavailable: the run cannot be used. InvalidInput: another class set; no usable label map.
    """
    from dataclasses import replace

    from core.store import Problem, SkipReport

    progress = progress or no_progress
    facts, _ = load_gan(settings.run, ema=settings.ema, device=settings.device, progress=progress)
    check_classes(facts, dataset.classes)
    if facts.kind == "pair":
        return generate_pairs(settings, dataset.classes, progress=progress, cancel=cancel)
    labelled = dataset.labelled_ids()
    if not labelled:
        raise InvalidInput(f"{dataset.root} has no labelled sample: a label2image GAN needs label maps to keep")
    skipped = skipped if skipped is not None else SkipReport()
    bad: set[str] = set()
    out: list[RecombinedSample] = []
    for i in range(settings.count):
        if cancel is not None:
            cancel.raise_if_cancelled("generation")
        one = replace(settings, seed=settings.seed + i, count=1)
        for offset in range(len(labelled)):
            sample_id = labelled[(i + offset) % len(labelled)]
            if sample_id in bad:
                continue
            try:
                out += generate_for_sample(dataset, sample_id, one, index=i, cancel=cancel)
                break
            except (ImageLoadError, SampleProblem) as exc:
                bad.add(sample_id)
                skipped.add(Problem("", str(exc), sample_id))
        else:
            raise InvalidInput(f"no label map of {dataset.root} can be used by GAN run {facts.path.name}; "
                               f"{skipped.summary()}")  # fmt: skip
        progress((i + 1) / settings.count, f"sample {i + 1}/{settings.count}")
    return out
