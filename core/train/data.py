"""Training data: a dataset's labelled samples resized to a square side, one-hot classes, seeded batches.

Every labelled sample is read once through :class:`core.store.DatasetStore` and kept in memory at the training
size (a few hundred 128 x 128 samples take a few tens of MB). Which samples make up a step's batch is a pure
function of ``(seed, step)``, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.types import ClassSet


def resize_pair(image: np.ndarray, label_map: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a sample to ``size x size``: the image bilinearly, the label map by nearest neighbour (so it gains
    no value it did not have).

    Args:
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` class indices, 255 = ignore.

    Returns:
        ``(size x size x 3 uint8, size x size uint8)``.
    """
    import cv2

    image = np.asarray(image)
    label_map = np.asarray(label_map)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInput(f"an image must be H x W x 3 uint8 RGB, got shape {image.shape} and dtype {image.dtype}")
    if label_map.shape != image.shape[:2] or label_map.dtype != np.uint8:
        raise InvalidInput(
            f"a label map must be H x W uint8 the size of its image {image.shape[:2]}, got shape {label_map.shape} "
            f"and dtype {label_map.dtype}"
        )
    img = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(np.ascontiguousarray(label_map), (size, size), interpolation=cv2.INTER_NEAREST)
    return img, lab


def one_hot(label_maps: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot encode label maps; ignore (and any value >= ``num_classes``) becomes all zeros.

    Args:
        label_maps: ``... x H x W uint8`` class indices.

    Returns:
        ``... x num_classes x H x W float32`` in ``{0, 1}``.
    """
    labels = np.asarray(label_maps)
    eye = np.concatenate(
        [np.eye(num_classes, dtype=np.float32), np.zeros((256 - num_classes, num_classes), np.float32)]
    )
    out = eye[labels]  # ... x H x W x C
    return np.moveaxis(out, -1, -3).copy()


def batch_indices(count: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Which samples step ``step`` (0-based) trains on: epochs are seeded permutations of ``range(count)``
    walked in order, so the result depends only on ``(count, batch, step, seed)``."""
    if count < 1:
        raise InvalidInput("no samples to draw batches from")
    start = step * batch
    out = []
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), count)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        take = min(batch - len(out), count - offset)
        out.extend(order[offset : offset + take].tolist())
    return np.asarray(out, np.int64)


@dataclass
class TrainData:
    """A dataset's labelled samples at the training size.

    Attributes:
        images: ``N x size x size x 3 uint8`` RGB.
        label_maps: ``N x size x size uint8`` (255 = ignore).
        ids: the sample ids, in the store's order.
        classes: the dataset's class set.
        present: sorted class indices that occur in at least one label map.
        skipped: ``(sample id, reason)`` for samples that could not be read.
    """

    images: np.ndarray
    label_maps: np.ndarray
    ids: list[str]
    classes: ClassSet
    present: list[int]
    skipped: list[tuple[str, str]]

    @property
    def num_classes(self) -> int:
        return len(self.classes.names)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, step: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Step ``step``'s batch: ``(B x size x size x 3 uint8, B x size x size uint8)``."""
        idx = batch_indices(len(self), batch, step, seed)
        return self.images[idx], self.label_maps[idx]


def load_train_data(
    root: str | Path, size: int, *, cache_dir: Path | None = None, progress=None, cancel=None
) -> TrainData:
    """Read every labelled sample of a dataset folder, resized to ``size x size``.

    Raises:
        InvalidInput: the folder holds no sample with a usable label map.
    """
    from core.progress import track
    from core.store import DatasetStore, SkipReport

    store = DatasetStore(root, cache_dir=cache_dir)
    ids = store.labelled_ids()
    skipped = SkipReport()
    images, labels, kept = [], [], []
    for data in track(store.each(ids, skipped=skipped), total=len(ids), progress=progress, cancel=cancel,
                      message="reading samples"):  # fmt: skip
        img, lab = resize_pair(data.image, data.label_map, size)
        images.append(img)
        labels.append(lab)
        kept.append(data.id)
    if not kept:
        raise InvalidInput(
            f"{store.root} has no sample with a usable label map; training needs images with label maps "
            f"(for example JPEGImages/ with SegmentationClass/)"
        )
    label_maps = np.stack(labels)
    counts = np.bincount(label_maps.ravel(), minlength=256)
    present = [int(v) for v in np.flatnonzero(counts[: len(store.classes.names)])]
    if not present:
        raise InvalidInput(f"every label map in {store.root} is all ignore (255); training needs labelled pixels")
    dropped = [(p.sample_id or p.path, p.reason) for p in skipped.skipped]
    return TrainData(np.stack(images), label_maps, kept, store.classes, present, dropped)
