"""Segmenter data: samples through the dataset store, the seeded split, synthetic folders mixed in, augmentation.

- :func:`load_samples` reads chosen labelled samples of a folder through :class:`core.store.DatasetStore`, resized
  to ``size x size`` (images bilinearly, label maps by nearest neighbour).
- :func:`split_ids` fixes a train / val / test split of sample ids for a seed, from counts (``30, 10, 10``) or
  fractions (``0.6, 0.2, 0.2``). It depends only on the *set* of ids and the seed (ids are sorted naturally first).
- :func:`draw_synthetic` draws ``round(ratio * n_real_train)`` samples from synthetic folders for the train set.
  When more are asked for than the folders hold, ``overflow="repeat"`` (default) takes every synthetic sample
  once per round, as many whole rounds as fit, then a seeded subset of one more round (so each is used equally
  often, give or take one, and the requested mix of real and synthetic holds); ``overflow="cap"`` takes each
  once and stops. Either way :class:`SyntheticDraw` says what happened (``note``).
- :func:`augment_batch`: the standard augmentations, through albumentations (2.x): ``"none"``, ``"flip"``
  (horizontal, p = 0.5), ``"scale"`` (the common segmentation recipe: ``RandomScale`` by a factor uniform in
  ``[0.5, 2.0]``, ``PadIfNeeded`` back to the side at a random position (image 0, label 255), ``RandomCrop``),
  ``"color"`` (``ColorJitter``: brightness, contrast, saturation 1 +- 0.2, hue +- 0.05, p = 0.8; image only), any
  of these joined by ``+`` (``"flip+scale"``), and ``"full"`` (all three). Label maps move by nearest neighbour
  only, so they never gain a value other than the ones they had and 255 (the padding). Each sample takes two draws
  from the step's generator (the flip coin, then a seed from which every transform gets a seed of its own), so
  a training sample's augmentation depends only on (seed, step, index in the batch).
  :func:`hflip` and :func:`scale_crop` are the same operations in plain numpy / OpenCV, for callers that pick
  the parameters themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.types import ClassSet

AUGMENT_OPS = ("flip", "scale", "color")  # in the order they are applied
AUGMENTATIONS = ("none", "flip", "scale", "flip+scale", "color", "flip+color", "full")
OVERFLOW = ("repeat", "cap")
SPLIT_NAMES = ("train", "val", "test")
SCALE_RANGE = (0.5, 2.0)
COLOR_JITTER = (0.2, 0.2, 0.2, 0.05)  # brightness, contrast, saturation (factor 1 +- x), hue (shift +- x turns)
COLOR_P = 0.8
IGNORE = 255


# ---- reading ------------------------------------------------------------------------------------------------


@dataclass
class SegData:
    """Samples at a training size.

    Attributes:
        images: ``N x size x size x 3 uint8`` RGB.
        label_maps: ``N x size x size uint8`` class indices, 255 = ignore.
        ids: ``N`` sample ids (with synthetic samples: ``"<folder>::<id>"``).
        classes: the class set.
        skipped: ``(sample id, reason)`` for samples that could not be read.
    """

    images: np.ndarray
    label_maps: np.ndarray
    ids: list[str]
    classes: ClassSet
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes.names)


def open_store(root: str | Path, cache_dir: Path | None = None):
    """The :class:`core.store.DatasetStore` of a folder (raises :class:`InvalidInput` when it holds no image)."""
    from core.store import DatasetStore

    return DatasetStore(root, cache_dir=cache_dir)


def load_samples(store, ids: list[str], size: int, *, progress=None, cancel=None, prefix: str = "") -> SegData:
    """Read samples ``ids`` of a store, resized to ``size x size`` (unreadable ones skipped and listed).

    Args:
        store: a :class:`core.store.DatasetStore`.
        ids: sample ids with label maps.
        size: the square side.
        prefix: put before each id in the result (``"<folder>::"`` for synthetic samples).
    """
    from core.progress import track
    from core.store import SkipReport
    from core.train.data import resize_pair

    if size < 1:
        raise InvalidInput(f"size must be at least 1, got {size}")
    skipped = SkipReport()
    images = np.zeros((len(ids), size, size, 3), np.uint8)
    labels = np.zeros((len(ids), size, size), np.uint8)
    kept: list[str] = []
    for data in track(store.each(ids, skipped=skipped), total=len(ids), progress=progress, cancel=cancel,
                      message=f"reading {store.root.name}"):  # fmt: skip
        images[len(kept)], labels[len(kept)] = resize_pair(data.image, data.label_map, size)
        kept.append(prefix + data.id)
    dropped = [(prefix + (p.sample_id or p.path), p.reason) for p in skipped.skipped]
    n = len(kept)
    return SegData(images[:n], labels[:n], kept, store.classes, dropped)


def concat(parts: list[SegData]) -> SegData:
    """Samples of several :class:`SegData` (same class set and size) in order."""
    return SegData(np.concatenate([p.images for p in parts]), np.concatenate([p.label_maps for p in parts]),
                   [i for p in parts for i in p.ids], parts[0].classes,
                   [s for p in parts for s in p.skipped])  # fmt: skip


def check_same_classes(reference: ClassSet, other: ClassSet, where: str) -> None:
    """Raise :class:`InvalidInput` when ``other`` (from folder ``where``) has different class names."""
    if list(other.names) != list(reference.names):
        raise InvalidInput(f"{where} has classes {list(other.names)}, the training data {list(reference.names)}; "
                           "synthetic folders must use the training data's classes (same names, same order)")  # fmt: skip


# ---- split --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A fixed split of sample ids; ``seed`` and ``sizes`` (as asked) are recorded with it."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    sizes: tuple

    def ids(self, name: str) -> list[str]:
        """The ids of ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the three, in that order)."""
        if name == "all":
            return self.train + self.val + self.test
        if name not in SPLIT_NAMES:
            raise InvalidInput(f"split {name!r} is unknown; accepted: train, val, test, all")
        return list(getattr(self, name))

    def to_json(self) -> dict:
        return {"seed": self.seed, "sizes": list(self.sizes), "train": self.train, "val": self.val, "test": self.test}

    @classmethod
    def from_json(cls, doc: dict) -> Split:
        return cls(list(doc["train"]), list(doc["val"]), list(doc["test"]), int(doc["seed"]), tuple(doc["sizes"]))


def parse_split(text: str | tuple | list) -> tuple:
    """``"30,10,10"`` -> ``(30, 10, 10)`` (counts); ``"0.6,0.2,0.2"`` -> fractions. A tuple passes through checked.

    Raises:
        InvalidInput: not three numbers, negative ones, or fractions over 1 in total.
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        try:
            values = tuple(int(p) if p.lstrip("-").isdigit() else float(p) for p in parts)
        except ValueError:
            raise InvalidInput(f"split {text!r} is not three numbers; use counts like 30,10,10 or fractions like "
                               "0.6,0.2,0.2 (train, val, test)") from None  # fmt: skip
    else:
        values = tuple(text)
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise InvalidInput(f"split {text!r} must be three numbers (train, val, test), as counts like 30,10,10 or "
                           "fractions like 0.6,0.2,0.2")  # fmt: skip
    if any(v < 0 for v in values):
        raise InvalidInput(f"split {text!r} has a negative part; counts and fractions must be 0 or more")
    if all(isinstance(v, int) for v in values):
        return values
    if any(v > 1 for v in values) or sum(values) > 1 + 1e-9:
        raise InvalidInput(f"split {text!r} mixes counts and fractions or its fractions add up to over 1; use "
                           "counts like 30,10,10 or fractions like 0.6,0.2,0.2")  # fmt: skip
    return tuple(float(v) for v in values)


def split_counts(n: int, sizes: tuple) -> tuple[int, int, int]:
    """``(train, val, test)`` counts for ``n`` ids. Counts are taken as they are (their sum must be at most ``n``).
    Fractions: val and test are ``round(f * n)``; train is the rest when the fractions add up to 1, else
    ``round(f_train * n)``."""
    sizes = parse_split(sizes)
    if all(isinstance(v, int) for v in sizes):
        counts = sizes
    else:
        val, test = (int(round(f * n)) for f in sizes[1:])
        train = n - val - test if abs(sum(sizes) - 1) < 1e-9 else int(round(sizes[0] * n))
        counts = (max(0, train), val, test)
    if sum(counts) > n:
        raise InvalidInput(f"the split asks for {counts[0]} + {counts[1]} + {counts[2]} = {sum(counts)} samples, "
                           f"the data holds {n} labelled ones; ask for fewer")  # fmt: skip
    return counts


def split_ids(ids: list[str], sizes: tuple | str = (0.6, 0.2, 0.2), seed: int = 0) -> Split:
    """A fixed train / val / test split: the ids sorted naturally, shuffled by ``seed``, cut by ``sizes``.

    Args:
        ids: sample ids (duplicates refused).
        sizes: counts ``(30, 10, 10)`` or fractions ``(0.6, 0.2, 0.2)`` (see :func:`split_counts`); a string
            ``"30,10,10"`` is parsed.
        seed: the shuffle's seed; the split depends only on the set of ids, ``sizes`` and ``seed``.

    Raises:
        InvalidInput: duplicate ids, bad sizes, or more samples asked for than there are.
    """
    from core.store import natural_key

    ids = list(ids)
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise InvalidInput(f"sample ids must be unique to split them, got duplicates {dupes}")
    sizes = parse_split(sizes)
    n_train, n_val, n_test = split_counts(len(ids), sizes)
    order = sorted(ids, key=natural_key)
    perm = np.random.default_rng([int(seed), 0x5EC5]).permutation(len(order))
    shuffled = [order[i] for i in perm]
    return Split(shuffled[:n_train], shuffled[n_train : n_train + n_val],
                 shuffled[n_train + n_val : n_train + n_val + n_test], int(seed), tuple(sizes))  # fmt: skip


# ---- synthetic samples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticDraw:
    """Which synthetic samples join the train set.

    Attributes:
        chosen: ``(folder index, sample id)`` pairs, in draw order (a pair repeats under ``overflow="repeat"``).
        requested: ``round(ratio * n_real_train)``.
        available: synthetic samples with label maps in all folders.
        note: ``""``, or what happened when more were requested than available.
    """

    chosen: list[tuple[int, str]]
    requested: int
    available: int
    note: str = ""

    def to_json(self) -> dict:
        return {"chosen": [list(c) for c in self.chosen], "requested": self.requested, "available": self.available,
                "note": self.note}  # fmt: skip


def draw_synthetic(pools: list[list[str]], n_real_train: int, ratio: float, seed: int,
                   overflow: str = "repeat") -> SyntheticDraw:  # fmt: skip
    """Draw ``round(ratio * n_real_train)`` synthetic samples from ``pools`` (one id list per folder) by ``seed``.

    Without overflow the draw is without replacement. With more requested than available, ``"repeat"`` takes
    whole seeded rounds of every sample and then a part of one more round; ``"cap"`` takes all once.

    Raises:
        InvalidInput: a negative ratio, an unknown ``overflow``, or samples requested from empty pools.
    """
    if ratio < 0 or not np.isfinite(ratio):
        raise InvalidInput(f"ratio must be 0 or more (synthetic samples per real training sample), got {ratio}")
    if overflow not in OVERFLOW:
        raise InvalidInput(f"overflow {overflow!r} is unknown; accepted: {', '.join(OVERFLOW)}")
    from core.store import natural_key

    pool = [(f, i) for f, ids in enumerate(pools) for i in sorted(ids, key=natural_key)]
    requested = int(round(ratio * n_real_train))
    if requested == 0:
        return SyntheticDraw([], 0, len(pool))
    if not pool:
        raise InvalidInput(f"ratio {ratio} asks for {requested} synthetic samples, but the synthetic folders hold "
                           "no sample with a label map")  # fmt: skip
    rng = np.random.default_rng([int(seed), 0x5E7])
    if requested <= len(pool):
        return SyntheticDraw([pool[i] for i in rng.permutation(len(pool))[:requested]], requested, len(pool))
    if overflow == "cap":
        note = (f"ratio {ratio} asks for {requested} synthetic samples, the folders hold {len(pool)}: all "
                f"{len(pool)} are used once (overflow=cap)")  # fmt: skip
        return SyntheticDraw([pool[i] for i in rng.permutation(len(pool))], requested, len(pool), note)
    chosen: list[tuple[int, str]] = []
    while len(chosen) < requested:
        chosen += [pool[i] for i in rng.permutation(len(pool))[: requested - len(chosen)]]
    note = (f"ratio {ratio} asks for {requested} synthetic samples, the folders hold {len(pool)}: each is used "
            f"{requested // len(pool)} or {-(-requested // len(pool))} times (overflow=repeat)")  # fmt: skip
    return SyntheticDraw(chosen, requested, len(pool), note)


# ---- augmentation -------------------------------------------------------------------------------------------


def parse_augmentation(policy: str) -> tuple[str, ...]:
    """``"flip+scale"`` -> ``("flip", "scale")``; ``"full"`` -> every op; ``"none"`` or ``""`` -> ``()``.

    Ops come back in the order they are applied (:data:`AUGMENT_OPS`), whatever order they were written in.

    Raises:
        InvalidInput: an unknown part.
    """
    text = (policy or "none").strip().lower()
    if text == "none":
        return ()
    if text == "full":
        return AUGMENT_OPS
    ops = tuple(p.strip() for p in text.split("+"))
    bad = [p for p in ops if p not in AUGMENT_OPS]
    if bad or len(set(ops)) != len(ops):
        raise InvalidInput(f"augmentation {policy!r} is unknown; accepted: {', '.join(AUGMENTATIONS)} (or ops of "
                           f"{', '.join(AUGMENT_OPS)} joined by +)")  # fmt: skip
    return tuple(op for op in AUGMENT_OPS if op in ops)


def albumentations_module():
    """``albumentations``, imported with its update check off (SegStudio makes no network call unasked)."""
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


_PIPELINES = threading.local()


def augmentation_pipeline(ops: tuple[str, ...], flip: bool, height: int, width: int):
    """The albumentations ``Compose`` for ``ops`` at ``height x width`` (``None`` when it would do nothing).

    ``flip`` says whether this sample is mirrored (the coin is drawn by :func:`augment_pair`, not by
    albumentations). Pipelines are cached per thread: seeding one mutates it, so threads never share one.
    """
    key = (ops, bool(flip), int(height), int(width))
    cache = getattr(_PIPELINES, "cache", None)
    if cache is None:
        cache = _PIPELINES.cache = {}
    if key not in cache:
        import cv2

        A = albumentations_module()
        steps = []
        if "flip" in ops and flip:
            steps.append(A.HorizontalFlip(p=1.0))
        if "scale" in ops:
            lo, hi = SCALE_RANGE
            steps += [A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                                    mask_interpolation=cv2.INTER_NEAREST, p=1.0),
                      A.PadIfNeeded(min_height=height, min_width=width, position="random",
                                    border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE),
                      A.RandomCrop(height=height, width=width, p=1.0)]  # fmt: skip
        if "color" in ops:
            steps.append(A.ColorJitter(brightness=COLOR_JITTER[0], contrast=COLOR_JITTER[1],
                                       saturation=COLOR_JITTER[2], hue=COLOR_JITTER[3], p=COLOR_P))  # fmt: skip
        cache[key] = A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST) if steps else None
    return cache[key]


def seed_pipeline(pipeline, seed: int) -> None:
    """Seed a ``Compose`` and give each of its transforms a seed of its own, derived from ``seed``.

    (``Compose.set_random_seed`` hands every transform the same seed, so their first draws would be equal: the scale
    factor and the brightness factor, say, would move together.)
    """
    pipeline.set_random_seed(int(seed))
    for k, transform in enumerate(pipeline.transforms):
        transform.set_random_seed(int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0]))


def hflip(image: np.ndarray, label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``(H x W x 3 uint8, H x W uint8)`` -> the same shapes."""
    return image[:, ::-1].copy(), label_map[:, ::-1].copy()


def scale_crop(image: np.ndarray, label_map: np.ndarray, scale: float, offset: tuple[float, float],
               out_size: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Resize by ``scale`` (image bilinear, label map nearest), then cut an ``out_size`` square.

    Args:
        image: ``H x W x 3 uint8``.
        label_map: ``H x W uint8``.
        scale: the resize factor (> 0).
        offset: ``(fy, fx)`` in ``[0, 1]``: where the window sits within the slack on each axis. Where the scaled
            sample is smaller than the window it is placed at that offset inside it, the rest padded (image 0,
            label 255).
        out_size: the square's side.

    Returns:
        ``(out_size x out_size x 3 uint8, out_size x out_size uint8)``; label values are a subset of the input's
        plus 255.
    """
    import cv2

    h, w = label_map.shape
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(label_map, (nw, nh), interpolation=cv2.INTER_NEAREST)
    out_img = np.zeros((out_size, out_size, 3), np.uint8)
    out_lab = np.full((out_size, out_size), IGNORE, np.uint8)
    spans = []
    for n, f in ((nh, offset[0]), (nw, offset[1])):
        slack = abs(n - out_size)
        shift = int(round(f * slack))
        # source window [s0, s0 + k) lands at destination [d0, d0 + k)
        spans.append((shift, 0, out_size) if n >= out_size else (0, shift, n))
    (sy, dy, ky), (sx, dx, kx) = spans
    out_img[dy : dy + ky, dx : dx + kx] = img[sy : sy + ky, sx : sx + kx]
    out_lab[dy : dy + ky, dx : dx + kx] = lab[sy : sy + ky, sx : sx + kx]
    return out_img, out_lab


def augment_pair(image: np.ndarray, label_map: np.ndarray, ops: tuple[str, ...],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Apply ``ops`` (from :func:`parse_augmentation`) to one sample through albumentations; shapes are kept.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` class indices, 255 = ignore.
        ops: e.g. ``("flip", "scale")``.
        rng: takes exactly two draws, whatever the ops: the flip coin (``rng.random() < 0.5``), then the seed of the
            albumentations transforms. So one sample's augmentation depends only on the generator's state, and
            within a batch only on (the step's seed, the sample's index).

    Returns:
        ``(H x W x 3 uint8, H x W uint8)``; label values are a subset of the input's plus 255 (the padding).
    """
    flip = rng.random() < 0.5
    seed = int(rng.integers(0, 2**63 - 1))
    pipeline = augmentation_pipeline(tuple(ops), flip, *label_map.shape[:2])
    if pipeline is None:
        return image, label_map
    seed_pipeline(pipeline, seed)
    out = pipeline(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(label_map))
    return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])


def augment_batch(images: np.ndarray, label_maps: np.ndarray, policy: str, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Augment a batch sample by sample.

    Args:
        images: ``B x S x S x 3 uint8``.
        label_maps: ``B x S x S uint8``.
        policy: one of :data:`AUGMENTATIONS`.
        rng: the step's generator.

    Returns:
        new ``(B x S x S x 3 uint8, B x S x S uint8)`` arrays (the inputs are not modified).
    """
    ops = parse_augmentation(policy)
    if not ops:
        return images, label_maps
    out_i, out_l = np.empty_like(images), np.empty_like(label_maps)
    for k in range(len(images)):
        out_i[k], out_l[k] = augment_pair(images[k], label_maps[k], ops, rng)
    return out_i, out_l
